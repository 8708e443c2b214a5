"""Data files as data objects: ``--data FILE`` without writing a factory.

:func:`load_data_file` reads

- an ``.npz`` of named input arrays (first axis = samples), optionally with a ``labels`` array;
- a folder of images (``.png``, ``.jpg``, ...), optionally one sub-folder per class (labels when the
  folder names are class ids or names the model knows), resized and normalised as the model's
  ``preprocessor_config.json`` says, or as :class:`FileOptions` say;
- a text file of sentences, one per line, tokenized with the model's tokenizer (or ``tokenizer=DIR``),

splits the samples into a calibration set and a held-out set (a seeded permutation, so the split is the
same on every run and machine) and returns a :class:`FileData`, which follows the data factory contract
of :mod:`quantplug.user`. Nothing here needs a PyTorch model: a caller that has one (``--model``) or an
ONNX graph (``--onnx``) names the inputs it takes. Without labels ``test_set()`` returns ``None`` as
targets: the caller scores fidelity to its FP32 model on the held-out inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["IMAGE_SUFFIXES", "LABEL_KEY", "FileData", "FileOptions", "is_data_file", "load_data_file",
           "split_indices"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEXT_SUFFIXES = (".txt", ".text")
LABEL_KEY = "labels"


@dataclass(frozen=True)
class FileOptions:
    """How a data file becomes model inputs.

    ``holdout``: the fraction held out for scoring (at least one sample each side). ``seed``: the split's
    seed. Images: ``image_size`` (height, width), ``image_mean``/``image_std`` (per channel, applied to
    pixels scaled to 0..1) and ``channels`` (1 grey, 3 RGB) override the model's image processor config;
    without either, images keep the size of the first image and are only scaled to 0..1. Text:
    ``tokenizer`` (a folder with a Hugging Face tokenizer; default: the model folder), ``max_length``
    (tokens per sentence, padded and truncated).
    """

    holdout: float = 0.2
    seed: int = 0
    image_size: tuple[int, int] | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    channels: int | None = None
    tokenizer: str | None = None
    max_length: int = 128
    label2id: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout={self.holdout} must be between 0 and 1 (e.g. 0.2 keeps a fifth for scoring)")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels={self.channels} must be 1 (grey) or 3 (RGB)")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"image size {self.image_size} must be HEIGHT,WIDTH (positive)")
        if self.max_length < 1:
            raise ConfigError(f"max_length={self.max_length} must be at least 1")


def split_indices(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (calibration, held-out) indices of ``n`` samples: a PCG64 permutation, stable across numpy."""
    if n < 2:
        raise ConfigError(f"the data has {n} sample(s); at least 2 are needed (one to calibrate, one to score)")
    n_test = min(n - 1, max(1, int(round(n * holdout))))
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


@dataclass
class FileData:
    """Samples from a data file, split into calibration and held-out sets (the data factory contract).

    ``arrays``: every sample of each input, by input name, in ``input_names`` order; ``labels``: one per
    sample or None. ``calibration_batches`` and ``train_batches`` draw from the calibration set only,
    ``test_set`` is the held-out set.
    """

    source: str
    kind: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    options: FileOptions = field(default_factory=FileOptions)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.input_names: tuple[str, ...] = tuple(self.arrays)
        self.has_labels = self.labels is not None
        self.calibration_index, self.test_index = split_indices(self.size, self.options.holdout, self.options.seed)

    @property
    def size(self) -> int:
        return len(next(iter(self.arrays.values())))

    def describe(self) -> str:
        """One line: what was read and how it was split."""
        inputs = ", ".join(f"{k} {tuple(v.shape[1:])} {v.dtype}" for k, v in self.arrays.items())
        labels = "labels" if self.has_labels else "no labels (scored by fidelity to FP32)"
        extra = "".join(f"; {n}" for n in self.notes)
        return (f"data {self.source}: {self.size} {self.kind} -> {inputs}; {len(self.calibration_index)} to "
                f"calibrate, {len(self.test_index)} held out (seed {self.options.seed}); {labels}{extra}")

    def _batches(self, rows: np.ndarray, batch_size: int, seed: int, labels: bool,
                 num_batches: int | None = None) -> Iterator[Any]:
        import torch

        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        produced, epoch = 0, 0
        while True:
            order = rows[np.random.Generator(np.random.PCG64([seed, epoch])).permutation(len(rows))]
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                inputs = tuple(torch.from_numpy(np.ascontiguousarray(a[idx])) for a in self.arrays.values())
                if labels:
                    y = None if self.labels is None else torch.from_numpy(np.ascontiguousarray(self.labels[idx]))
                    yield inputs, y
                else:
                    yield inputs
                produced += 1
                if num_batches is not None and produced >= num_batches:
                    return
            epoch += 1
            if num_batches is None:
                return

    def calibration_batches(self, batch_size: int, seed: int = 0,
                            num_batches: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Shuffled input batches from the calibration set: one pass, or ``num_batches`` (passes repeat)."""
        return self._batches(self.calibration_index, batch_size, seed, False, num_batches)

    def train_batches(self, batch_size: int, seed: int = 0) -> Iterator[tuple[tuple[Any, ...], Any]]:
        """One shuffled epoch of ``((inputs...), labels)`` from the calibration set (labels None without)."""
        return self._batches(self.calibration_index, batch_size, seed, True)

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The held-out inputs and their labels (None: score against the FP32 model's outputs)."""
        idx = self.test_index
        targets = None if self.labels is None else self.labels[idx]
        return {k: v[idx] for k, v in self.arrays.items()}, targets


def is_data_file(spec: str) -> bool:
    """Whether ``--data spec`` names a file or folder (else it is a ``package.module:make_data`` spec)."""
    p = Path(spec)
    return p.exists() or p.suffix.lower() in (".npz", *TEXT_SUFFIXES) or os.sep in spec


def load_data_file(path: str | os.PathLike[str], *, inputs: Sequence[str] | None = None,
                   optional: Sequence[str] = (), model_dir: str | os.PathLike[str] | None = None,
                   options: FileOptions | None = None) -> FileData:
    """Read ``path`` (an ``.npz``, an image folder or a text file) as a :class:`FileData`.

    ``inputs``: the input names the model requires, in its order (None: every array of an ``.npz``; an
    image folder's single input is named ``pixel_values``; a text file's are the tokenizer's outputs);
    ``optional``: names it also accepts. ``model_dir``: a folder with the model's
    ``preprocessor_config.json`` or tokenizer. Bad input raises a one-line :class:`ConfigError`.
    """
    options = options or FileOptions()
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"data {p} does not exist; --data takes an .npz, a folder of images, a text file "
                          "of sentences, or package.module:make_data")
    inputs = list(inputs) if inputs is not None else None
    if p.is_dir():
        return _load_images(p, inputs, Path(model_dir) if model_dir else None, options)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p, inputs, list(optional), options)
    if suffix in TEXT_SUFFIXES:
        return _load_text(p, inputs, list(optional), Path(model_dir) if model_dir else None, options)
    raise ConfigError(f"data file {p} has an unknown kind ({suffix or 'no suffix'}); use an .npz of named "
                      "inputs, a folder of images, or a .txt file of sentences")


# --- .npz -------------------------------------------------------------------------------------------------

def _as_model_array(name: str, a: np.ndarray, source: Path) -> np.ndarray:
    if a.ndim == 0:
        raise ConfigError(f"{source}: array {name!r} is a scalar; each input needs a first (sample) axis")
    if a.dtype == np.float64:
        return a.astype(np.float32)
    if a.dtype in (np.int32, np.int16, np.uint8, np.int8, np.uint16) and name != "pixel_values":
        return a.astype(np.int64)
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"{source}: array {name!r} has dtype {a.dtype}; inputs must be numbers")
    return a


def _load_npz(p: Path, inputs: list[str] | None, optional: list[str], options: FileOptions) -> FileData:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise ConfigError(f"{p} is not a readable .npz ({type(e).__name__}: {e}); write it with "
                          "numpy.savez(path, input_name=array, ...)") from e
    labels = arrays.pop(LABEL_KEY, None)
    if not arrays:
        raise ConfigError(f"{p} holds no input arrays; write numpy.savez(path, input_name=array, ...)")
    if inputs is None:
        names = list(arrays)
    else:
        missing = [k for k in inputs if k not in arrays]
        if missing:
            raise ConfigError(f"{p} has no array {', '.join(map(repr, missing))} (it has {', '.join(arrays)}); "
                              f"the model's inputs are {', '.join(inputs)}: add it to the .npz")
        names = list(inputs) + [k for k in optional if k in arrays and k not in inputs]
        extra = [k for k in arrays if k not in names]
        if extra:
            raise ConfigError(f"{p} has array(s) {', '.join(map(repr, extra))} that the model does not take "
                              f"(inputs: {', '.join(list(inputs) + [k for k in optional if k not in inputs])}); "
                              f"rename or remove them (labels go in an array named {LABEL_KEY!r})")
    out = {k: _as_model_array(k, arrays[k], p) for k in names}
    sizes = {k: len(v) for k, v in out.items()}
    if labels is not None:
        sizes[LABEL_KEY] = len(labels)
    if len(set(sizes.values())) != 1:
        raise ConfigError(f"{p}: arrays have different numbers of samples ({', '.join(f'{k} {n}' for k, n in sizes.items())}); "
                          "the first axis of every array is the sample axis")
    if labels is not None:
        if labels.dtype.kind not in "iub":
            raise ConfigError(f"{p}: {LABEL_KEY!r} has dtype {labels.dtype}; labels are class ids (integers)")
        labels = labels.astype(np.int64)
    return FileData(str(p), "samples", out, labels, options)


# --- image folders ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ImagePrep:
    size: tuple[int, int] | None  # (height, width); None: the first image's
    shortest_edge: int | None
    crop: tuple[int, int] | None
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    channels: int
    resample: int


def _processor_config(model_dir: Path | None) -> dict[str, Any]:
    if model_dir is None:
        return {}
    f = model_dir / "preprocessor_config.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{f} is not valid JSON ({e}); fix it or pass --image-size/--image-mean/--image-std") from e
    return data if isinstance(data, dict) else {}


def _hw(value: Any) -> tuple[tuple[int, int] | None, int | None]:
    if isinstance(value, int):
        return (value, value), None
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"])), None
        if "shortest_edge" in value:
            return None, int(value["shortest_edge"])
    return None, None


def _image_prep(model_dir: Path | None, options: FileOptions) -> tuple[_ImagePrep, str]:
    cfg = _processor_config(model_dir)
    size: tuple[int, int] | None = None
    shortest: int | None = None
    crop: tuple[int, int] | None = None
    if cfg.get("do_resize", True) and "size" in cfg:
        size, shortest = _hw(cfg["size"])
    if cfg.get("do_center_crop") and "crop_size" in cfg:
        crop, _ = _hw(cfg["crop_size"])
    scale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    mean = std = None
    if cfg.get("do_normalize", False):
        mean, std = tuple(cfg.get("image_mean", ())), tuple(cfg.get("image_std", ()))
    if options.image_size is not None:
        size, shortest, crop = tuple(options.image_size), None, None  # type: ignore[assignment]
    mean = tuple(options.image_mean) if options.image_mean is not None else mean
    std = tuple(options.image_std) if options.image_std is not None else std
    if (mean is None) != (std is None):
        mean = mean or (0.0,)
        std = std or (1.0,)
    channels = options.channels or (len(mean) if mean and len(mean) in (1, 3) else 3)
    for what, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) not in (1, channels):
            raise ConfigError(f"image {what} {list(v)} has {len(v)} values for {channels}-channel images; "
                              f"give 1 or {channels} (--image-{what})")
    if std is not None and min(std) <= 0:
        raise ConfigError(f"image std {list(std)} must be positive")
    resample = int(cfg.get("resample", 2))  # PIL's BILINEAR
    how = "the model's preprocessor_config.json" if cfg else "options"
    return _ImagePrep(size, shortest, crop, scale, mean, std, channels, resample), how


def _list_images(folder: Path) -> list[tuple[Path, str | None]]:
    found: list[tuple[Path, str | None]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            found.append((entry, None))
        elif entry.is_dir():
            found += [(f, entry.name) for f in sorted(entry.iterdir())
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
    return found


def _folder_labels(found: list[tuple[Path, str | None]], options: FileOptions) -> tuple[np.ndarray | None, str]:
    classes = sorted({c for _, c in found if c is not None})
    if not classes:
        return None, "no class sub-folders"
    if any(c is None for _, c in found):
        return None, "images both at the top and in sub-folders: no labels"
    if all(c in options.label2id for c in classes):
        ids = {c: int(options.label2id[c]) for c in classes}
    elif all(c.isdigit() for c in classes):
        ids = {c: int(c) for c in classes}
    else:
        return None, (f"{len(classes)} class sub-folders whose names are not class ids or the model's label "
                      "names: no labels")
    return np.array([ids[str(c)] for _, c in found], dtype=np.int64), f"labels from {len(classes)} class sub-folders"


def _read_image(path: Path, prep: _ImagePrep, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im: Image.Image = opened.convert("L" if prep.channels == 1 else "RGB")
            if prep.shortest_edge is not None:
                w, h = im.size
                k = prep.shortest_edge / min(w, h)
                im = im.resize((max(1, round(w * k)), max(1, round(h * k))), resample=prep.resample)
            elif size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), resample=prep.resample)
            if prep.crop is not None:
                ch, cw = prep.crop
                w, h = im.size
                left, top = max(0, (w - cw) // 2), max(0, (h - ch) // 2)
                im = im.crop((left, top, left + cw, top + ch))
            a = np.asarray(im, dtype=np.float32)
    except OSError as e:
        raise ConfigError(f"image {path} cannot be read ({e}); remove it or replace it with a valid image") from e
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    a = a * prep.scale
    if prep.mean is not None and prep.std is not None:
        a = (a - np.asarray(prep.mean, np.float32).reshape(-1, 1, 1)) / np.asarray(prep.std, np.float32).reshape(-1, 1, 1)
    return a


def _load_images(folder: Path, inputs: list[str] | None, model_dir: Path | None, options: FileOptions) -> FileData:
    found = _list_images(folder)
    if not found:
        raise ConfigError(f"folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}), at its top or in "
                          "class sub-folders; point --data at a folder of image files")
    if inputs is not None and len(inputs) != 1:
        raise ConfigError(f"an image folder gives one input, but the model takes {len(inputs)} "
                          f"({', '.join(inputs)}); pass an .npz with every input instead")
    name = inputs[0] if inputs else "pixel_values"
    prep, how = _image_prep(model_dir, options)
    if prep.size is None and prep.shortest_edge is None and prep.crop is None:
        from PIL import Image

        with Image.open(found[0][0]) as im:
            size: tuple[int, int] | None = (im.size[1], im.size[0])
    else:
        size = prep.size
    images = [_read_image(f, prep, size) for f, _ in found]
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ConfigError(f"images in {folder} come out in different sizes {sorted(shapes)[:3]}; pass "
                          "--image-size HEIGHT,WIDTH to resize them all")
    labels, label_note = _folder_labels(found, options)
    shape = images[0].shape
    note = f"{shape[0]}x{shape[1]}x{shape[2]} per {how}"
    if prep.mean is not None:
        note += f", mean {list(prep.mean)} std {list(prep.std or ())}"
    return FileData(str(folder), "images", {name: np.stack(images).astype(np.float32)}, labels, options,
                    [note, label_note])


# --- text files -------------------------------------------------------------------------------------------

def _load_text(p: Path, inputs: list[str] | None, optional: list[str], model_dir: Path | None,
               options: FileOptions) -> FileData:
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"text file {p} cannot be read as UTF-8 ({e}); one sentence per line") from e
    sentences = [ln for ln in lines if ln]
    if len(sentences) < 2:
        raise ConfigError(f"text file {p} has {len(sentences)} sentence(s); write at least 2, one per line")
    tok_dir = Path(options.tokenizer) if options.tokenizer else model_dir
    if tok_dir is None:
        raise ConfigError(f"text file {p} needs a tokenizer; pass --tokenizer DIR (a folder with a Hugging Face "
                          "tokenizer) or use --model hf:DIR with a model folder that has one")
    tokenizer = load_tokenizer(tok_dir)
    length = min(options.max_length, int(getattr(tokenizer, "model_max_length", options.max_length) or options.max_length))
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    produced = list(enc.keys())
    if inputs is None:
        names = produced
    else:
        missing = [k for k in inputs if k not in produced]
        if missing:
            raise ConfigError(f"the tokenizer in {tok_dir} does not produce {', '.join(missing)} (it gives "
                              f"{', '.join(produced)}); the model's inputs are {', '.join(inputs)}; pass an .npz")
        names = list(inputs) + [k for k in produced if k in optional and k not in inputs]
    arrays = {k: np.asarray(enc[k]).astype(np.int64) for k in names}
    truncated = int(sum(len(tokenizer(s)["input_ids"]) > length for s in sentences[:2000]))
    notes = [f"{length} tokens per sentence (tokenizer of {tok_dir})"]
    if truncated:
        notes.append(f"{truncated} sentence(s) truncated")
    return FileData(str(p), "sentences", arrays, None, options, notes)


def load_tokenizer(folder: Path) -> Any:
    """A Hugging Face tokenizer from a local folder, offline; a one-line ConfigError when there is none."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
             "sentencepiece.bpe.model", "tokenizer.model")
    if not folder.is_dir() or not any((folder / f).is_file() for f in files):
        raise ConfigError(f"{folder} has no tokenizer ({', '.join(files[:3])}, ...); pass --tokenizer DIR, a "
                          "folder written by tokenizer.save_pretrained")
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ConfigError("reading a text file needs transformers; pip install 'quantplug[hf]'") from e
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise ConfigError(f"the tokenizer in {folder} does not load offline ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); save it with tokenizer.save_pretrained") from e
