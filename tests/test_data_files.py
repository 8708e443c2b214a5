"""`--data FILE`: .npz, image folders and text files as data objects (quantplug.data), and the scores
that need no labels (quantplug.user). Real files, real PIL, the real bundled tokenizer; no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quantplug.data import FileOptions, load_data_file, split_indices
from quantplug.errors import ConfigError
from quantplug.user import accuracy_score, fidelity_score


def _npz(path: Path, n: int = 10, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"input_ids": rng.integers(0, 100, (n, 8)).astype(np.int32),
              "attention_mask": np.ones((n, 8), np.int64), **extra}
    np.savez(path, **arrays)
    return path


def test_split_is_seeded_disjoint_and_complete() -> None:
    cal, test = split_indices(50, 0.2, seed=0)
    assert len(test) == 10 and len(cal) == 40
    assert sorted(set(cal) | set(test)) == list(range(50)) and not set(cal) & set(test)
    again = split_indices(50, 0.2, seed=0)
    assert (again[0] == cal).all() and (again[1] == test).all()
    assert not (split_indices(50, 0.2, seed=1)[1] == test).all()
    assert [len(x) for x in split_indices(2, 0.9, 0)] == [1, 1]  # one on each side, always
    with pytest.raises(ConfigError, match="at least 2 are needed"):
        split_indices(1, 0.2, 0)


def test_npz_inputs_in_model_order_with_labels(tmp_path: Path) -> None:
    labels = np.arange(10) % 3
    data = load_data_file(_npz(tmp_path / "d.npz", labels=labels), inputs=["input_ids"],
                          optional=["attention_mask", "token_type_ids"])
    assert data.input_names == ("input_ids", "attention_mask") and data.has_labels
    assert data.arrays["input_ids"].dtype == np.int64  # int32 ids widened for the model and ONNX
    inputs, targets = data.test_set()
    assert set(inputs) == {"input_ids", "attention_mask"} and len(targets) == len(data.test_index) == 2
    assert (targets == labels[data.test_index]).all()
    batches = list(data.calibration_batches(3, seed=0))
    assert [b[0].shape[0] for b in batches] == [3, 3, 2] and all(len(b) == 2 for b in batches)
    seen = torch.cat([b[0] for b in batches])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, data.arrays["input_ids"][data.calibration_index].tolist()))
    assert len(list(data.calibration_batches(3, num_batches=7))) == 7  # passes repeat when asked for more
    (x, _mask), y = next(iter(data.train_batches(4)))
    assert x.shape == (4, 8) and y is not None and y.dtype == torch.int64


def test_npz_without_model_names_keeps_file_order_and_float32(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", b=np.zeros((4, 2)), a=np.ones((4, 3), np.float32))
    data = load_data_file(tmp_path / "d.npz")
    assert data.input_names == ("b", "a") and data.arrays["b"].dtype == np.float32 and not data.has_labels
    assert data.test_set()[1] is None  # no labels: the caller scores fidelity to its FP32 model


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"attention_mask": np.ones((4, 8))}, "has no array 'input_ids' (it has attention_mask)"),
        ({"input_ids": np.ones((4, 8)), "atention_mask": np.ones((4, 8))}, "'atention_mask' that the model does not take"),
        ({"input_ids": np.ones((4, 8)), "attention_mask": np.ones((5, 8))}, "different numbers of samples"),
        ({"input_ids": np.ones((4, 8)), "labels": np.ones(4) * 0.5}, "labels are class ids"),
    ],
)
def test_npz_mismatch_is_one_clear_line(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ConfigError) as e:
        load_data_file(tmp_path / "d.npz", inputs=["input_ids"], optional=["attention_mask"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_a_data_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_data_file(tmp_path / "missing.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match="unknown kind"):
        load_data_file(tmp_path / "x.csv")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        load_data_file(tmp_path / "bad.npz")


def _images(folder: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        d = folder / name if name else folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(d / f"{i}.png")


def test_image_folder_follows_the_model_processor_config(tmp_path: Path) -> None:
    _images(tmp_path / "imgs", {"cat": 3, "dog": 2})
    model = tmp_path / "model"
    model.mkdir()
    (model / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 8, "width": 6}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    data = load_data_file(tmp_path / "imgs", inputs=["pixel_values"], model_dir=model,
                          options=FileOptions(label2id={"cat": 0, "dog": 1}))
    x = data.arrays["pixel_values"]
    assert x.shape == (5, 3, 8, 6) and x.dtype == np.float32
    # Normalised as (pixel/255 - 0.5) / 0.25 of the resized image.
    with Image.open(tmp_path / "imgs" / "cat" / "0.png") as im:
        ref = (np.asarray(im.convert("RGB").resize((6, 8), Image.BILINEAR), np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(x[0], ref.transpose(2, 0, 1), atol=1e-5)
    assert data.labels is not None and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert "labels from 2 class sub-folders" in data.describe()


def test_image_folder_options_grey_and_digit_classes(tmp_path: Path) -> None:
    _images(tmp_path / "imgs", {"0": 2, "7": 2}, size=(9, 9))
    data = load_data_file(tmp_path / "imgs", options=FileOptions(image_size=(4, 5), channels=1,
                                                                 image_mean=(0.1,), image_std=(0.5,)))
    assert data.input_names == ("pixel_values",) and data.arrays["pixel_values"].shape == (4, 1, 4, 5)
    assert data.labels is not None and sorted(data.labels.tolist()) == [0, 0, 7, 7]
    _images(tmp_path / "flat", {"": 3}, size=(7, 5))
    flat = load_data_file(tmp_path / "flat")
    assert flat.arrays["pixel_values"].shape == (3, 3, 5, 7) and not flat.has_labels
    assert float(flat.arrays["pixel_values"].max()) <= 1.0  # only scaled to 0..1 without a processor or options


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="has no images"):
        load_data_file(tmp_path / "empty")
    _images(tmp_path / "mixed", {"": 1}, size=(4, 4))
    _images(tmp_path / "mixed2", {"": 1}, size=(6, 4))
    (tmp_path / "mixed2" / "0.png").rename(tmp_path / "mixed" / "1.png")
    # Without a size, images take the first one's size, so all come out alike.
    assert load_data_file(tmp_path / "mixed").arrays["pixel_values"].shape == (2, 3, 4, 4)
    with pytest.raises(ConfigError, match="one input, but the model takes 2"):
        load_data_file(tmp_path / "mixed", inputs=["a", "b"])
    with pytest.raises(ConfigError, match="has 2 values for 3-channel"):
        load_data_file(tmp_path / "mixed", options=FileOptions(image_mean=(0.5, 0.5), image_std=(1.0,)))


def test_text_file_tokenized_with_the_model_tokenizer(tmp_path: Path) -> None:
    from quantplug.builtin.workloads.minilm import model_dir

    text = tmp_path / "s.txt"
    text.write_text("The quick brown fox.\n\nJumps over the lazy dog.\n" + "".join(f"Sentence {i}.\n" for i in range(8)))
    data = load_data_file(text, inputs=["input_ids"], optional=["attention_mask"], model_dir=model_dir(),
                          options=FileOptions(max_length=16))
    assert data.size == 10 and data.input_names == ("input_ids", "attention_mask")  # blank lines skipped
    ids, mask = data.arrays["input_ids"], data.arrays["attention_mask"]
    assert ids.shape == mask.shape == (10, 16) and ids.dtype == np.int64
    assert ids[0, 0] == 101 and mask[0].sum() == 7  # [CLS] the quick brown fox . [SEP]
    with pytest.raises(ConfigError, match="needs a tokenizer; pass --tokenizer DIR"):
        load_data_file(text)
    with pytest.raises(ConfigError, match="has no tokenizer"):
        load_data_file(text, options=FileOptions(tokenizer=str(tmp_path)))
    (tmp_path / "one.txt").write_text("only one\n")
    with pytest.raises(ConfigError, match="at least 2"):
        load_data_file(tmp_path / "one.txt", model_dir=model_dir())


def test_accuracy_takes_argmax_over_the_class_axis_of_a_segmentation_map() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 3, 3))  # (N, classes, H, W)
    labels = logits.argmax(axis=1)
    assert accuracy_score(logits, labels)["accuracy"] == 100.0
    labels[0, 0, 0] = (labels[0, 0, 0] + 1) % 5
    assert accuracy_score(logits, labels)["accuracy"] == pytest.approx(100 * 35 / 36)
    tokens = rng.normal(size=(2, 6, 4))  # (N, tokens, classes)
    assert accuracy_score(tokens, tokens.argmax(-1), class_axis=-1)["accuracy"] == 100.0
    with pytest.raises(ConfigError, match="do not match targets"):
        accuracy_score(logits, labels[:, 0])


def test_fidelity_without_labels_is_agreement_and_cosine() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 10))
    close = ref + rng.normal(scale=1e-3, size=ref.shape)
    f = fidelity_score(close, ref)
    assert f["top1_agreement"] == f["accuracy"] == 100.0 and f["cosine"] > 0.9999
    flipped = ref.copy()
    flipped[:5] = -flipped[:5]
    g = fidelity_score(flipped, ref)
    assert g["top1_agreement"] <= 90.0 and g["cosine_worst"] == pytest.approx(-1.0)
    assert "top1_agreement" not in fidelity_score(close, ref, class_axis=None)  # embeddings: cosine only
