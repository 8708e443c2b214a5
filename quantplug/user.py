"""Bring your own model and data.

The model: ``package.module:build`` (a function returning an ``nn.Module``; ``--weights`` a state_dict
for it), or ``hf:DIR``, a Hugging Face model folder (:mod:`quantplug.hf`). A factory that returns a
transformers model is called with keyword inputs and its chosen output, as ``hf:`` models are.

The data: a data file (:mod:`quantplug.data`: an ``.npz`` of named inputs, a folder of images, a text
file of sentences), or ``package.module:make_data``, a factory. The data factory contract:
``make_data()`` returns an object with

- ``calibration_batches(batch_size, seed=0)`` (required): an iterable of input batches, each a tensor or a
  tuple of tensors in the model's positional order, drawn from training data (never from the test set);
  ``--calib-batch-size`` is ``batch_size``, ``--calib-batches`` how many are read. Calibration warns
  when it saw fewer than 500 samples in all;
- ``train_batches(batch_size, seed=0)`` (for ``qat``/``qad``): one epoch of ``((inputs...), labels)``,
  labels ``None`` when unlabelled (``qad`` then distils from the FP32 model alone);
- ``test_set()`` (optional): ``({input_name: array}, targets)`` for the scores in ``metrics.json``;
  ``targets`` may be ``None``: quantplug then runs the FP32 model on these inputs and scores fidelity to
  it (top-1 agreement and cosine), no labels needed;
- optional attributes as in a workload: ``input_names`` (the model's inputs in positional order; they
  become the ONNX input names, and ``test_set`` keys must use them), ``output_names`` (ONNX output
  names), ``metric`` (``"accuracy"`` or ``"cosine"``), ``class_axis`` (the class axis of the output for
  accuracy and top-1 agreement, default 1: ``(N, C)`` logits, ``(N, C, H, W)`` segmentation maps),
  ``score(outputs, targets)``, ``loss(outputs, labels)``, ``train_lr``, ``has_labels``.

The model may return a tensor, a tuple/list (the first element is scored and exported first), a dict
or a Hugging Face output object (its first field, e.g. ``logits``); choose a field with an ``hf:``
model's ``--hf-output``.

:class:`UserWorkload` wraps a model and such an object into the workload contract (docs/internals.md),
so the pipeline treats user models and built-in workloads alike.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ExportError

__all__ = ["UserWorkload", "accuracy_score", "cosine_score", "fidelity_score", "load_spec"]


def load_spec(spec: str, what: str) -> Any:
    """Import ``package.module:attribute``; a one-line ConfigError when it does not import."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} spec {spec!r} must look like package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(f"{what} spec {spec!r}: cannot import {module_name!r} ({type(e).__name__}: {e}); "
                          "check the name and that it is on PYTHONPATH") from e
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise ConfigError(f"{what} spec {spec!r}: module {module_name!r} has no attribute {attr!r}") from e
    return obj


def cosine_score(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = targets.reshape(len(targets), -1).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"cosine": float(cos.mean()), "cosine_worst": float(cos.min())}


def _predictions(outputs: np.ndarray, class_axis: int) -> np.ndarray:
    if outputs.ndim < 2:
        raise ConfigError(f"outputs of shape {outputs.shape} have no class axis; accuracy needs (N, classes, ...) "
                          "scores (or set metric = 'cosine')")
    return outputs.argmax(axis=class_axis)


def accuracy_score(outputs: np.ndarray, targets: np.ndarray, class_axis: int = 1) -> dict[str, float]:
    """Percent of predictions (argmax over ``class_axis``, never over a flattened output) equal to ``targets``:
    per sample for ``(N, C)`` logits, per pixel for ``(N, C, H, W)`` maps against ``(N, H, W)`` labels."""
    pred = _predictions(outputs, class_axis)
    if pred.size != targets.size:
        raise ConfigError(f"predictions of shape {pred.shape} (argmax over axis {class_axis} of {outputs.shape}) "
                          f"do not match targets of shape {targets.shape}; give one label per prediction")
    return {"accuracy": float(np.mean(pred.reshape(-1) == targets.reshape(-1)) * 100)}


def fidelity_score(outputs: np.ndarray, reference: np.ndarray, class_axis: int | None = 1) -> dict[str, float]:
    """Fidelity of ``outputs`` to the FP32 model's ``reference`` outputs: mean and worst cosine, and (with a
    class axis) top-1 agreement in percent, also reported as ``accuracy``."""
    if outputs.shape != reference.shape:
        raise ConfigError(f"outputs of shape {outputs.shape} do not match the FP32 reference {reference.shape}")
    scores = cosine_score(outputs, reference)
    if class_axis is not None and outputs.ndim >= 2:
        agree = float(np.mean(_predictions(outputs, class_axis) == _predictions(reference, class_axis)) * 100)
        scores.update({"top1_agreement": agree, "accuracy": agree})
    return scores


class UserWorkload:
    """A user's model (factory or ``hf:DIR``) + data (factory or file) presented as a workload."""

    def __init__(self, model_spec: str, data_spec: str | None, weights: str | Path | None = None, *,
                 hf_output: str = "auto", data_options: Any = None) -> None:
        self.name = model_spec
        self.description = f"user model {model_spec}"
        self._hf: Any = None
        self._factory: Any = None
        self._hf_output = hf_output
        self._model: Any = None  # the FP32 model of the first build_model: the reference for fidelity
        self._reference: np.ndarray | None = None
        self._export_checked = False
        if model_spec.startswith("hf:"):
            from .hf import inspect_folder

            if weights:
                raise ConfigError("--weights goes with --model package.module:build; an hf: folder holds its own weights")
            self._hf = inspect_folder(model_spec[3:])
            self.description = f"Hugging Face {self._hf.architecture} from {self._hf.path}"
        else:
            self._factory = load_spec(model_spec, "model")
            if not callable(self._factory):
                raise ConfigError(f"model spec {model_spec!r} is not callable; point it at a function returning an nn.Module")
        self._weights = Path(weights) if weights else None
        if self._weights is not None and not self._weights.is_file():
            raise ConfigError(f"weights file {self._weights} does not exist")
        if data_spec is None:
            raise ConfigError("a user model needs --data: an .npz of inputs, a folder of images, a text file of "
                              "sentences, or package.module:make_data (see quantplug.user for the contract)")
        self.data = self._load_data(data_spec, data_options)
        if not callable(getattr(self.data, "calibration_batches", None)):
            raise ConfigError(f"data factory {data_spec!r} returned {type(self.data).__name__}, which has no "
                              "calibration_batches(batch_size, seed) method (see quantplug.user)")
        default_metric = "accuracy"
        if self._hf is not None and self._hf.resolve_output(hf_output) != "logits":
            default_metric = "cosine"
        self.metric = getattr(self.data, "metric", default_metric)
        default_inputs = self._hf.inputs[:1] if self._hf is not None else ("input",)
        self.input_names = tuple(getattr(self.data, "input_names", default_inputs))
        self.output_names = tuple(getattr(self.data, "output_names", ("output",)))
        self.has_labels = bool(getattr(self.data, "has_labels", True))
        self.train_lr = float(getattr(self.data, "train_lr", 2e-5 if self._hf is not None else 1e-3))
        self.class_axis = int(getattr(self.data, "class_axis", self._hf.class_axis if self._hf is not None else 1))

    def _load_data(self, data_spec: str, data_options: Any) -> Any:
        from .data import FileOptions, is_data_file, load_data_file

        if is_data_file(data_spec):
            options = data_options or FileOptions()
            if self._hf is not None:
                from dataclasses import replace

                changes: dict[str, Any] = {}
                if options.channels is None and self._hf.num_channels is not None:
                    changes["channels"] = self._hf.num_channels
                if not options.label2id and self._hf.label2id:
                    changes["label2id"] = self._hf.label2id
                size = getattr(self._hf.config, "image_size", None)
                if (options.image_size is None and isinstance(size, int) and size > 0
                        and not (self._hf.path / "preprocessor_config.json").is_file()):
                    changes["image_size"] = (size, size)  # what the model was configured for
                options = replace(options, **changes)
                return load_data_file(data_spec, inputs=self._hf.inputs[:1], optional=self._hf.inputs[1:],
                                      model_dir=self._hf.path, options=options)
            # A factory's model takes the .npz arrays positionally, in the order they were saved.
            return load_data_file(data_spec, inputs=None, options=options)
        if data_options is not None and data_options != FileOptions():
            raise ConfigError(f"data options (--holdout, --image-*, --tokenizer, ...) are for data files, and "
                              f"--data {data_spec!r} is a factory; set them in the factory instead")
        make_data = load_spec(data_spec, "data")
        try:
            return make_data() if callable(make_data) else make_data
        except Exception as e:
            raise ConfigError(f"data factory {data_spec!r} failed: {type(e).__name__}: {e}") from e

    def build_model(self, seed: int = 0, progress: bool = True) -> Any:
        import torch

        model: Any
        if self._hf is not None:
            from .hf import load_model

            model = load_model(self._hf, self.input_names, self._hf_output, seed=seed, progress=progress)
            if not self._hf.has_weights:
                warnings.warn(f"hf:{self._hf.path} has no weights ({', '.join(('model.safetensors', 'pytorch_model.bin'))}): "
                              f"{self._hf.architecture} is built from config.json with random weights (seed {seed})",
                              UserWarning, stacklevel=2)
        else:
            try:
                model = self._factory()
            except Exception as e:
                raise ConfigError(f"model factory {self.name!r} failed: {type(e).__name__}: {e}") from e
            if not isinstance(model, torch.nn.Module):
                raise ConfigError(f"model factory {self.name!r} returned {type(model).__name__}, not a torch.nn.Module")
            if self._weights is not None:
                self._load_state(model)
            from .hf import wrap_hf_model

            model = wrap_hf_model(model, self.input_names, self._hf_output)
        model = model.eval()
        if self._model is None:
            self._model = model
        self.check_export(model)
        return model

    def _load_state(self, model: Any) -> None:
        import torch

        try:
            state = torch.load(str(self._weights), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"weights {self._weights} cannot be loaded with torch.load(weights_only=True): "
                              f"{type(e).__name__}: {e}; save a state_dict with torch.save") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except Exception as e:
            msg = str(e).replace("\n", " ").replace("\t", "")
            raise ConfigError(f"weights {self._weights} do not match model {self.name!r}: {msg[:400]}; "
                              "pass the state_dict saved from this architecture") from e

    def check_export(self, model: Any) -> None:
        """Export the FP32 model once to a scratch file, so an unexportable model fails before calibration."""
        if self._export_checked:
            return
        import tempfile

        from .export import export_fp32
        from .quant.api import _check_runs

        example = self.example_inputs(1)
        _check_runs(model, example)  # a data/model mismatch is reported as such, not as an export failure
        with tempfile.TemporaryDirectory(prefix="quantplug-export-check-") as tmp:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export_fp32(model, example, Path(tmp) / "model.onnx", self.input_names, self.output_names)
            except ExportError as e:
                what = self._hf.architecture if self._hf is not None else type(model).__name__
                fix = ("try another --hf-output (logits, last_hidden_state, mean)" if self._hf is not None else
                       "replace the operation it names, or wrap the model in a module that returns a tensor")
                raise ExportError(f"{self.name}: {what} does not export to ONNX (checked before calibration, "
                                  f"nothing was quantized): {str(e).splitlines()[0][:400]}; {fix}") from e
        self._export_checked = True

    def calibration_batches(self, batch_size: int, seed: int = 0, num_batches: int | None = None) -> Any:
        fn = self.data.calibration_batches
        if num_batches is not None and "num_batches" in inspect.signature(fn).parameters:
            return fn(batch_size, seed=seed, num_batches=num_batches)
        return fn(batch_size, seed=seed)

    def train_batches(self, batch_size: int, seed: int = 0) -> Any:
        fn = getattr(self.data, "train_batches", None)
        if fn is None:
            raise ConfigError("the data object has no train_batches(batch_size, seed); qat/qad need it (or use ptq)")
        return fn(batch_size, seed=seed)

    def example_inputs(self, batch_size: int = 1) -> tuple[Any, ...]:
        from .quant.calibrate import as_inputs

        for batch in self.calibration_batches(batch_size):
            return tuple(t[:batch_size] for t in as_inputs(batch))
        raise ConfigError("the calibration set is empty; calibration_batches() yielded nothing")

    def loss(self, outputs: Any, labels: Any) -> Any:
        fn = getattr(self.data, "loss", None)
        if fn is not None:
            return fn(outputs, labels)
        import torch.nn.functional as F

        if self.class_axis != 1 and outputs.dim() > 2:  # e.g. (N, tokens, classes): cross_entropy wants axis 1
            outputs = outputs.movedim(self.class_axis, 1)
        return F.cross_entropy(outputs, labels)

    def has_test_set(self) -> bool:
        return callable(getattr(self.data, "test_set", None))

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        inputs, targets = self.data.test_set()
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        if targets is None:
            return inputs, self.reference_outputs(inputs)
        return inputs, np.asarray(targets)

    def reference_outputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The FP32 model's outputs on the held-out inputs (computed once): the targets of fidelity scores."""
        if self._reference is None:
            from .pipeline import predict_torch

            model = self._model if self._model is not None else self.build_model()
            self._reference = predict_torch(model, inputs, self.input_names, batch=64)
        return self._reference

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        fn = getattr(self.data, "score", None)
        if fn is not None:
            return dict(fn(outputs, targets))
        outputs, targets = np.asarray(outputs), np.asarray(targets)
        if targets.shape == outputs.shape and targets.dtype.kind == "f":  # the FP32 model's outputs
            return fidelity_score(outputs, targets, self.class_axis if self.metric == "accuracy" else None)
        if self.metric == "cosine":
            return cosine_score(outputs, targets)
        return accuracy_score(outputs, targets, self.class_axis)
