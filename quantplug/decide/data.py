"""The data ``tune`` and ``sensitivity`` decide on: a validation split carved from the training data.

The held-out test set is never used to make a decision; it only gives the final reported numbers. The
validation rows are the first batches of one seeded training epoch; calibration and training batches
are the workload's own, with those rows removed (matched by content), so no decision is made on data
the model was calibrated or fine-tuned on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DecisionData", "predict"]

VAL_SEED = 7919  # the seeded epoch whose first batches become the validation split
MAX_VAL_FRACTION = 0.2  # never hold out more than this share of the training data


def _row_hashes(inputs: tuple[torch.Tensor, ...]) -> list[str]:
    n = inputs[0].shape[0]
    arrays = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in inputs]
    return [hashlib.sha1(b"".join(a[i].tobytes() for a in arrays)).hexdigest() for i in range(n)]


def _keep(inputs: tuple[torch.Tensor, ...], held: set[str]) -> torch.Tensor | None:
    """Boolean mask of rows not in ``held`` (None when every row is kept)."""
    import torch

    mask = torch.tensor([h not in held for h in _row_hashes(inputs)], dtype=torch.bool)
    return None if bool(mask.all()) else mask


def _as_tuple(batch: Any) -> tuple[Any, ...]:
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2 and isinstance(batch[0], (tuple, list)):  # (inputs, labels)
            return tuple(batch[0])
        return tuple(batch)
    if isinstance(batch, dict):
        return tuple(batch.values())
    return (batch,)


def _take(iterable: Any, n: int) -> Iterator[Any]:
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item


def predict(model: Any, inputs: tuple[torch.Tensor, ...], batch_size: int = 256) -> np.ndarray:
    """The model's first output over ``inputs`` in batches, without gradients, as numpy."""
    import torch

    outs = []
    with torch.no_grad():
        for start in range(0, inputs[0].shape[0], batch_size):
            out = model(*(t[start : start + batch_size] for t in inputs))
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif isinstance(out, dict):
                out = next(iter(out.values()))
            outs.append(out.detach().float().cpu().numpy())
    return np.concatenate(outs)


@dataclass
class DecisionData:
    """Validation inputs/targets plus calibration and training streams that exclude them."""

    workload: Any
    val_inputs: tuple[torch.Tensor, ...]
    val_labels: torch.Tensor | None
    held: set[str]
    batch_size: int
    seed: int

    source: str = "train"  # where the validation rows came from: "train" or "calibration" batches

    @classmethod
    def carve(cls, workload: Any, val_size: int = 500, batch_size: int = 32, seed: int = 0) -> DecisionData:
        """Take ``val_size`` rows of the training data (at most a fifth of it) as the validation split.

        Without training batches (a user data object with calibration data only) the rows come from the
        calibration batches and the targets are the FP32 model's own predictions (agreement with FP32).
        """
        import torch

        if val_size < 1:
            raise ConfigError(f"validation size {val_size} must be at least 1 (500 recommended)")
        def train_stream() -> Iterator[tuple[tuple[Any, ...], Any]]:
            for inputs, y in workload.train_batches(batch_size, seed=VAL_SEED):
                yield _as_tuple(inputs), y

        def calib_stream() -> Iterator[tuple[tuple[Any, ...], Any]]:
            for b in _take(workload.calibration_batches(batch_size, seed=VAL_SEED), 10_000):
                yield _as_tuple(b), None

        source, stream = "train", train_stream
        try:
            total = sum(int(inputs[0].shape[0]) for inputs, _ in stream())  # a counting pass, nothing kept
        except ConfigError:  # no training data
            total = 0
        if total == 0:
            source, stream = "calibration", calib_stream
            total = sum(int(inputs[0].shape[0]) for inputs, _ in stream())
        if total < 2:
            raise ConfigError(f"workload {workload.name} yields fewer than 2 rows; a validation split needs data")
        val_size = max(1, min(val_size, int(total * MAX_VAL_FRACTION)))
        parts: list[tuple[torch.Tensor, ...]] = []
        labels: list[torch.Tensor] = []
        rows = 0
        for inputs, y in stream():
            if rows >= val_size:
                break
            parts.append(inputs)
            rows += int(inputs[0].shape[0])
            if y is not None:
                labels.append(y)
        val_inputs = tuple(torch.cat([p[k] for p in parts])[:val_size] for k in range(len(parts[0])))
        val_labels = torch.cat(labels)[:val_size] if labels and len(labels) == len(parts) else None
        return cls(workload, val_inputs, val_labels, set(_row_hashes(val_inputs)), batch_size, seed, source)

    @property
    def val_rows(self) -> int:
        return int(self.val_inputs[0].shape[0])

    def targets(self, fp_model: Any) -> np.ndarray:
        """What ``workload.score`` compares against: labels, or the FP32 model's outputs (fidelity)."""
        if self.val_labels is not None and getattr(self.workload, "has_labels", True):
            return self.val_labels.numpy()
        reference = predict(fp_model, self.val_inputs)
        if getattr(self.workload, "metric", "accuracy") == "accuracy" and reference.ndim == 2:
            return reference.argmax(axis=1)  # agreement with the FP32 model's predictions
        return reference

    def score(self, model: Any, targets: np.ndarray) -> float:
        """The workload's primary metric of ``model`` on the validation split."""
        return self.evaluate(model, targets)[0]

    def evaluate(self, model: Any, targets: np.ndarray, reference: np.ndarray | None = None) -> tuple[float, float]:
        """(primary metric, output error): the error is the mean squared difference to ``reference`` (the
        FP32 outputs) relative to their mean square, 0 without a reference. It separates configurations
        whose metric ties, e.g. when the FP32 model scores 100% on rows it was trained on."""
        metric = getattr(self.workload, "metric", "accuracy")
        out = predict(model, self.val_inputs)
        score = float(self.workload.score(out, targets)[metric])
        if reference is None or reference.shape != out.shape:
            return score, 0.0
        err = float(np.mean((out - reference) ** 2) / max(float(np.mean(reference**2)), 1e-12))
        return score, err

    def calibration(self, num_batches: int, batch_size: int | None = None) -> list[tuple[torch.Tensor, ...]]:
        """``num_batches`` input batches from the calibration data, validation rows removed (passes repeat,
        reshuffled, when one pass is shorter)."""
        bs = batch_size or self.batch_size
        out: list[tuple[torch.Tensor, ...]] = []
        for attempt in range(8):  # further passes with other seeds; a pass with no usable row ends it
            try:
                stream = self.workload.calibration_batches(bs, seed=self.seed + attempt,
                                                           num_batches=num_batches * 2 + 2)
            except TypeError:  # a data object without num_batches: one pass per call
                stream = self.workload.calibration_batches(bs, seed=self.seed + attempt)
            before = len(out)
            for batch in stream:
                inputs = _as_tuple(batch)
                mask = _keep(inputs, self.held)
                if mask is not None:
                    if not bool(mask.any()):
                        continue
                    inputs = tuple(t[mask] for t in inputs)
                out.append(inputs)
                if len(out) >= num_batches:
                    return out
            if len(out) == before:
                break
        if not out:
            raise ConfigError("no calibration batch is left outside the validation split; give more calibration "
                              "data or a smaller --val-size")
        return out

    @property
    def has_training(self) -> bool:
        return self.source == "train"

    def available_rows(self) -> int:
        """How many rows remain outside the validation split (one pass)."""
        if not self.has_training:
            return sum(int(b[0].shape[0]) for b in self.calibration(10_000))
        return sum(int(inputs[0].shape[0]) for inputs, _ in self.training_epoch(0))

    def training_epoch(self, epoch: int, batch_size: int | None = None,
                       max_batches: int | None = None) -> Iterator[tuple[tuple[Any, ...], Any]]:
        """One epoch of ``(inputs, labels)`` with the validation rows removed (at most ``max_batches``)."""
        bs = batch_size or self.batch_size
        for i, (inputs, labels) in enumerate(self.workload.train_batches(bs, seed=self.seed * 1000 + epoch + 1)):
            if max_batches is not None and i >= max_batches:
                return
            inputs = _as_tuple(inputs)
            mask = _keep(inputs, self.held)
            if mask is not None:
                if not bool(mask.any()):
                    continue
                inputs = tuple(t[mask] for t in inputs)
                labels = labels[mask] if labels is not None else None
            yield inputs, labels
