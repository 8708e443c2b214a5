"""Built-in workloads: registration, the Workload contract, disjoint splits, trained accuracy, metrics.

Trained weights are cached under ``quantplug.cache.cache_dir("workloads")`` (``$QUANTPLUG_CACHE`` or
``.quantplug-cache``), so only the first run trains (about a minute for mnist-cnn + digits-mobilenet).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantplug.builtin.workloads import builtin_workloads
from quantplug.builtin.workloads._base import predict
from quantplug.builtin.workloads._data import content_hashes, stratified_split
from quantplug.errors import ConfigError
from quantplug.plugins import get_plugin_manager
from quantplug.registry import build_registry

NAMES = {"mnist-cnn", "mnist-resnet", "digits-mobilenet"}
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
