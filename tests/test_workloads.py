"""Built-in workloads: registration, the Workload contract, disjoint splits, trained accuracy, metrics.

Trained weights are cached under ``quantplug.cache.cache_dir("workloads")`` (``$QUANTPLUG_CACHE`` or
``.quantplug-cache``), so only the first run trains (about a minute for mnist-cnn + digits-mobilenet).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantplug.builtin.workloads import builtin_workloads
from quantplug.builtin.workloads._base import predict, weights_path
from quantplug.builtin.workloads._data import content_hashes, stratified_split
from quantplug.builtin.workloads.digits import DigitsMobileNetWorkload
from quantplug.builtin.workloads.minilm import cosine_scores
from quantplug.builtin.workloads.resnet import synthetic_images
from quantplug.errors import ConfigError
from quantplug.plugins import get_plugin_manager
from quantplug.registry import build_registry

NAMES = {"mnist-cnn", "mnist-resnet", "digits-mobilenet", "resnet18", "resnet50", "minilm"}
TRAINED = ("mnist-cnn", "digits-mobilenet")


@pytest.fixture(scope="module")
def workloads():  # type: ignore[no-untyped-def]
    registry = build_registry(get_plugin_manager(load_entrypoints=False))
    return {name: registry.workload(name) for name in registry.names("workloads")}


def test_every_builtin_workload_registers(workloads):  # type: ignore[no-untyped-def]
    assert NAMES <= set(workloads)
    assert {w.name for w in builtin_workloads()} == NAMES


@pytest.mark.parametrize("name", sorted(NAMES))
def test_workload_contract_attributes(workloads, name):  # type: ignore[no-untyped-def]
    w = workloads[name]
    assert w.name == name and isinstance(w.description, str) and len(w.description) > 20
    assert w.metric in ("accuracy", "cosine")
    assert isinstance(w.input_names, tuple) and w.input_names and all(isinstance(n, str) for n in w.input_names)
    assert isinstance(w.output_names, tuple) and len(w.output_names) == 1
    assert isinstance(w.has_labels, bool)
    assert isinstance(w.train_lr, float) and 0 < w.train_lr < 1
    for method in ("build_model", "example_inputs", "calibration_batches", "train_batches", "loss", "test_set", "score"):
        assert callable(getattr(w, method)), method


@pytest.mark.parametrize("name", TRAINED)
def test_classification_contract_and_accuracy(workloads, name):  # type: ignore[no-untyped-def]
    w = workloads[name]
    model = w.build_model(seed=0, progress=False)
    assert not model.training
    (x,) = w.example_inputs(batch_size=3)
    assert x.dtype == torch.float32 and x.shape[0] == 3
    with torch.no_grad():
        assert model(x).shape == (3, 10)

    inputs, targets = w.test_set()
    assert set(inputs) == set(w.input_names) and len(inputs["input"]) == len(targets)
    outputs = predict(model, inputs["input"])
    scores = w.score(outputs, targets)
    assert w.metric in scores
    floor = {"mnist-cnn": 95.0, "digits-mobilenet": 90.0}[name]
    assert scores["accuracy"] > floor, scores

    (xb,), yb = next(iter(w.train_batches(16, seed=0)))
    assert xb.shape[0] == 16 and yb is not None and yb.dtype == torch.int64
    loss = w.loss(model(xb), yb)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ConfigError):
        w.loss(model(xb), None)


def test_cached_weights_load_identically(workloads):  # type: ignore[no-untyped-def]
    w = workloads["digits-mobilenet"]
    a = w.build_model(seed=0, progress=False).state_dict()
    b = w.build_model(seed=0, progress=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", TRAINED)
def test_held_out_split_is_disjoint_from_calibration_and_training(workloads, name):  # type: ignore[no-untyped-def]
    w = workloads[name]
    s = w.split
    assert not set(s.train_index) & set(s.test_index)
    test_hashes = content_hashes(w.test_set()[0]["input"])
    train_hashes = content_hashes(s.x_train)
    assert not test_hashes & train_hashes
    seen: set[str] = set()
    for (x,) in w.calibration_batches(64, seed=3):
        seen |= content_hashes(x.numpy())
    for (x,), _ in w.train_batches(64, seed=3):
        seen |= content_hashes(x.numpy())
    assert seen <= train_hashes and not seen & test_hashes
    assert len(seen) >= len(train_hashes) - 64  # one pass covers the split (train drops a short batch)


def test_calibration_batches_count_and_determinism(workloads):  # type: ignore[no-untyped-def]
    w = workloads["digits-mobilenet"]
    one_pass = list(w.calibration_batches(32))
    assert len(one_pass) == -(-1200 // 32)
    many = list(w.calibration_batches(32, seed=1, num_batches=128))  # more than one pass: cycles
    assert len(many) == 128 and all(b[0].shape == (32, 1, 8, 8) for b in many[:37])
    again = list(w.calibration_batches(32, seed=1, num_batches=5))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, many, strict=False))
    other = next(iter(w.calibration_batches(32, seed=2)))
    assert not torch.equal(other[0], many[0][0])


def test_stratified_split_is_exact_and_stratified():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(labels, 12)
    assert len(test) == 12 and len(train) == 48 and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]
    assert np.array_equal(stratified_split(labels, 12)[1], test)


def test_accuracy_score_on_hand_made_arrays(workloads):  # type: ignore[no-untyped-def]
    w = workloads["mnist-cnn"]
    outputs = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    assert w.score(outputs, np.array([1, 0, 2, 2])) == {"accuracy": 75.0}
    with pytest.raises(ConfigError):
        w.score(outputs, np.array([1, 0]))


# --- resnet18 / resnet50: synthetic data, fidelity to FP32 --------------------------------------------


def test_synthetic_images_are_deterministic_and_streams_differ():
    a = synthetic_images(1, 0, 0, 2, size=32)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, synthetic_images(1, 0, 0, 2, size=32))
    assert not torch.equal(a, synthetic_images(2, 0, 0, 2, size=32))
    assert not torch.equal(a, synthetic_images(1, 1, 0, 2, size=32))


def test_resnet18_contract_and_fidelity_targets(workloads):  # type: ignore[no-untyped-def]
    w = workloads["resnet18"]
    assert not w.has_labels
    model = w.build_model(seed=0, progress=False)
    inputs, targets = w.test_set()
    x = inputs["input"]
    assert x.shape == (128, 3, 224, 224) and x.dtype == np.float32 and targets.shape == (128,)
    assert len(np.unique(targets)) > 50  # predictions vary by image, not one class for all
    out = predict(model, x[:8], batch_size=8)
    assert out.shape == (8, 1000) and np.array_equal(out.argmax(1), targets[:8])
    (ex,) = w.example_inputs(batch_size=2)
    assert ex.shape == (2, 3, 224, 224)
    calib = list(w.calibration_batches(4, num_batches=3))
    assert len(calib) == 3 and not content_hashes(np.concatenate([c[0].numpy() for c in calib])) & content_hashes(x)
    (xb,), yb = next(iter(w.train_batches(2)))
    assert xb.shape == (2, 3, 224, 224) and yb is None
    with pytest.raises(ConfigError, match="no labels"):
        w.loss(torch.zeros(2, 1000), None)


def test_resnet_score_on_hand_made_arrays(workloads):  # type: ignore[no-untyped-def]
    w = workloads["resnet50"]
    outputs = np.zeros((4, 1000), dtype=np.float32)
    outputs[0, 7] = 3.0  # top-1 is the target
    outputs[1, [1, 2, 3, 4, 5]] = [9, 8, 7, 6, 5]  # target 5 is 5th
    outputs[2, [10, 11]] = [2, 1]  # target 11 is 2nd
    outputs[3, :6] = [6, 5, 4, 3, 2, 1]  # target 999 far down
    scores = w.score(outputs, np.array([7, 5, 11, 999]))
    assert scores == {"accuracy": 25.0, "top5_agreement": 75.0}


# --- minilm ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(workloads):  # type: ignore[no-untyped-def]
    w = workloads["minilm"]
    return w, w.build_model(progress=False)


def test_minilm_embeddings_are_unit_norm_and_similarity_behaves(minilm):  # type: ignore[no-untyped-def]
    w, model = minilm
    inputs, targets = w.test_set()
    assert inputs["input_ids"].shape == (500, 128) and inputs["input_ids"].dtype == np.int64
    assert inputs["attention_mask"].dtype == np.int64 and targets.shape == (500, 384)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)

    first = {k: v[[0, 0, 1]] for k, v in inputs.items()}  # sentence 0 twice, then sentence 1
    emb = w.embed(model, first)
    np.testing.assert_allclose(emb[:2], targets[[0, 0]], atol=1e-5)  # cached targets are this model's output
    assert float(emb[0] @ emb[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(emb[0] @ emb[2]) < 0.95
    assert w.score(targets, targets)["cosine"] == pytest.approx(1.0)


def test_minilm_text_splits_are_disjoint_real_sentences(minilm):  # type: ignore[no-untyped-def]
    w, model = minilm
    train, test = w.sentences("train"), w.sentences("test")
    assert len(test) == 500 and len(train) >= 2000 and not set(train) & set(test)
    assert all(s[0].isupper() and s.endswith(".") for s in test)
    test_rows = {tuple(r) for r in w.test_set()[0]["input_ids"]}
    batches = list(w.calibration_batches(64, seed=0))
    assert sum(len(ids) for ids, _ in batches) == len(train)
    assert not {tuple(r) for ids, _ in batches for r in ids.numpy()} & test_rows
    (ids, mask), labels = next(iter(w.train_batches(8)))
    (full_ids, full_mask) = next(iter(w.calibration_batches(8)))  # the same shuffled rows, padded to 128
    longest = int(full_mask.sum(dim=1).max())
    assert ids.shape == mask.shape == (8, longest) < (8, 128) and ids.dtype == torch.int64 and labels is None
    assert torch.equal(ids, full_ids[:, :longest]) and int(full_mask[:, longest:].sum()) == 0
    with torch.no_grad():  # cutting the padding changes nothing in the embedding
        np.testing.assert_allclose(model(ids, mask).numpy(), model(full_ids, full_mask).numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="no labels"):
        w.loss(torch.zeros(8, 384), None)


def test_cosine_scores_on_hand_made_arrays():
    t = np.eye(4, 3)[[0, 1, 2, 0]] + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]])
    scores = cosine_scores(t * 2.0, t, k=2)  # scale does not matter
    assert scores == pytest.approx({"cosine": 1.0, "cosine_worst": 1.0, "top10_agreement": 1.0})
    o = t.copy()
    o[0] = [0.0, 1.0, 0.0]  # row 0 now orthogonal to its reference
    s = cosine_scores(o, t, k=1)
    assert s["cosine_worst"] == pytest.approx(0.0, abs=1e-12)
    assert s["cosine"] == pytest.approx(0.75)
    assert 0.0 < s["top10_agreement"] < 1.0
    with pytest.raises(ConfigError):
        cosine_scores(o[:2], t)


# --- the weight cache ----------------------------------------------------------------------------------


class _TinyDigits(DigitsMobileNetWorkload):
    """The digits data with a linear model and one epoch: exercises training and caching in a second."""

    name = "tiny-digits"
    version = "t1"
    epochs = 1

    def _make_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_training_is_cached_deterministic_and_rebuilt_when_corrupt(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("QUANTPLUG_CACHE", str(tmp_path))
    w = _TinyDigits()
    first = w.build_model(seed=5, progress=False)
    path = weights_path("tiny-digits", "t1", 5)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert not list(path.parent.glob("*.tmp"))  # written atomically, nothing left over
    retrained = {k: v.clone() for k, v in first.state_dict().items()}
    path.unlink()
    again = w.build_model(seed=5, progress=False).state_dict()  # same seed -> same weights
    assert all(torch.equal(retrained[k], again[k]) for k in again)
    other = w.build_model(seed=6, progress=False).state_dict()
    assert not torch.equal(other["1.weight"], again["1.weight"])

    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unusable"):
        rebuilt = w.build_model(seed=5, progress=False).state_dict()
    assert all(torch.equal(retrained[k], rebuilt[k]) for k in rebuilt)
    assert torch.equal(torch.load(path, weights_only=True)["1.weight"], retrained["1.weight"])
