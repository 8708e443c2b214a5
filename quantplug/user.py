"""Bring your own model and data: ``package.module:build`` + optional weights + ``package.module:make_data``.

The data factory contract: ``make_data()`` returns an object with

- ``calibration_batches(batch_size, seed=0)`` (required): an iterable of input batches, each a tensor or a
  tuple of tensors, drawn from training data (never from the test set);
- ``train_batches(batch_size, seed=0)`` (for ``qat``/``qad``): one epoch of ``((inputs...), labels)``,
  labels ``None`` when unlabelled;
- ``test_set()`` (optional): ``({input_name: array}, targets)`` for the accuracy in ``metrics.json``;
- optional attributes as in a workload: ``input_names``, ``output_names``, ``metric`` (``"accuracy"`` or
  ``"cosine"``), ``score(outputs, targets)``, ``loss(outputs, labels)``, ``train_lr``, ``has_labels``.

:class:`UserWorkload` wraps a model factory and such an object into the workload contract
(docs/internals.md), so the pipeline treats user models and built-in workloads alike.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["UserWorkload", "cosine_score", "load_spec"]


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


def _accuracy(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(np.mean(outputs.reshape(len(outputs), -1).argmax(1) == targets.reshape(-1)) * 100)}


class UserWorkload:
    """A user's model factory + data object presented as a workload."""

    def __init__(self, model_spec: str, data_spec: str | None, weights: str | Path | None = None) -> None:
        self.name = model_spec
        self.description = f"user model {model_spec}"
        self._factory = load_spec(model_spec, "model")
        if not callable(self._factory):
            raise ConfigError(f"model spec {model_spec!r} is not callable; point it at a function returning an nn.Module")
        self._weights = Path(weights) if weights else None
        if self._weights is not None and not self._weights.is_file():
            raise ConfigError(f"weights file {self._weights} does not exist")
        if data_spec is None:
            raise ConfigError("a user model needs --data package.module:make_data (see quantplug.user for the contract)")
        make_data = load_spec(data_spec, "data")
        try:
            self.data = make_data() if callable(make_data) else make_data
        except Exception as e:
            raise ConfigError(f"data factory {data_spec!r} failed: {type(e).__name__}: {e}") from e
        if not callable(getattr(self.data, "calibration_batches", None)):
            raise ConfigError(f"data factory {data_spec!r} returned {type(self.data).__name__}, which has no "
                              "calibration_batches(batch_size, seed) method (see quantplug.user)")
        self.metric = getattr(self.data, "metric", "accuracy")
        self.input_names = tuple(getattr(self.data, "input_names", ("input",)))
        self.output_names = tuple(getattr(self.data, "output_names", ("output",)))
        self.has_labels = bool(getattr(self.data, "has_labels", True))
        self.train_lr = float(getattr(self.data, "train_lr", 1e-3))

    def build_model(self, seed: int = 0, progress: bool = True) -> Any:
        import torch

        try:
            model = self._factory()
        except Exception as e:
            raise ConfigError(f"model factory {self.name!r} failed: {type(e).__name__}: {e}") from e
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"model factory {self.name!r} returned {type(model).__name__}, not a torch.nn.Module")
        if self._weights is not None:
            try:
                state = torch.load(self._weights, map_location="cpu", weights_only=True)
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
        return model.eval()

    def calibration_batches(self, batch_size: int, seed: int = 0) -> Any:
        return self.data.calibration_batches(batch_size, seed=seed)

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

        return F.cross_entropy(outputs, labels)

    def has_test_set(self) -> bool:
        return callable(getattr(self.data, "test_set", None))

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        inputs, targets = self.data.test_set()
        return {k: np.asarray(v) for k, v in inputs.items()}, np.asarray(targets)

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        fn = getattr(self.data, "score", None)
        if fn is not None:
            return dict(fn(outputs, targets))
        return cosine_score(outputs, targets) if self.metric == "cosine" else _accuracy(outputs, targets)
