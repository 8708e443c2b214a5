"""The shared base of the image-classification workloads: data access, training, weight caching.

A subclass supplies ``_load_split()`` (normalized arrays, see :mod:`._data`) and ``_make_model()``
(an untrained module) plus the class attributes below; everything in the Workload contract
(docs/internals.md) is implemented here once.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantplug.cache import cache_dir
from quantplug.errors import ConfigError

from ._data import Split, atomic_write_bytes, batch_indices

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ClassificationWorkload", "accuracy_score", "load_cached", "predict", "weights_path"]


def weights_path(name: str, version: str, seed: int) -> Path:
    """Where the trained weights of workload ``name`` (architecture ``version``) for ``seed`` live."""
    return cache_dir("workloads") / f"{name}-{version}-seed{seed}.pt"


def accuracy_score(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``{"accuracy": percent of rows whose argmax over the last axis equals the target}``."""
    outputs = np.asarray(outputs)
    targets = np.asarray(targets).reshape(-1)
    if outputs.ndim != 2 or outputs.shape[0] != targets.shape[0]:
        raise ConfigError(
            f"score() needs outputs of shape (N, classes) with N = {targets.shape[0]} targets, got "
            f"{outputs.shape}; pass the model's logits for the whole test set"
        )
    return {"accuracy": float(np.mean(outputs.argmax(axis=1) == targets) * 100.0)}


class ClassificationWorkload:
    """An image classifier trained from scratch on a fixed split; metric: top-1 accuracy in percent."""

    name: str = ""
    description: str = ""
    metric: str = "accuracy"
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)
    has_labels: bool = True
    train_lr: float = 1e-3
    epochs: int = 5
    train_batch_size: int = 64
    weight_decay: float = 0.0
    max_shift: int = 0  # random-translation augmentation during training, in pixels
    version: str = "v1"  # part of the weights' cache key: bump it when the architecture or training changes

    def __init__(self) -> None:
        self._split: Split | None = None

    # --- for subclasses -------------------------------------------------------------------------------
    def _load_split(self) -> Split:
        raise NotImplementedError

    def _make_model(self) -> nn.Module:
        raise NotImplementedError

    # --- data ----------------------------------------------------------------------------------------
    @property
    def split(self) -> Split:
        if self._split is None:
            self._split = self._load_split()
        return self._split

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        import torch

        x = self.split.x_train
        reps = math.ceil(batch_size / len(x))
        return (torch.from_numpy(np.concatenate([x] * reps)[:batch_size].copy()),)

    def calibration_batches(
        self, batch_size: int, seed: int = 0, num_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Shuffled input batches from the training split only; ``num_batches=None`` is one pass,
        an integer gives exactly that many batches (reshuffled passes repeat as needed)."""
        import torch

        x = self.split.x_train
        for idx in batch_indices(len(x), batch_size, seed, num_batches=num_batches):
            yield (torch.from_numpy(x[idx]),)

    def train_batches(
        self, batch_size: int, seed: int = 0
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]:
        """One shuffled epoch of ``((inputs,), labels)`` over the training split (last short batch dropped)."""
        import torch

        s = self.split
        drop_last = len(s.x_train) > batch_size
        for idx in batch_indices(len(s.x_train), batch_size, seed, drop_last=drop_last):
            yield (torch.from_numpy(s.x_train[idx]),), torch.from_numpy(s.y_train[idx])

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        import torch.nn.functional as F

        if labels is None:
            raise ConfigError(f"workload {self.name} needs labels for its loss; train_batches yields them")
        return F.cross_entropy(outputs, labels)

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        s = self.split
        return {self.input_names[0]: s.x_test}, s.y_test

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return accuracy_score(outputs, targets)

    # --- model ----------------------------------------------------------------------------------------
    def build_model(self, seed: int = 0, progress: bool = True) -> nn.Module:
        """The trained FP32 model in eval mode; trained on first use and cached per (name, version, seed)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._make_model()
        path = weights_path(self.name, self.version, seed)
        if not (path.is_file() and load_cached(model, path)):
            started = time.perf_counter()
            self._fit(model, seed, progress)
            seconds = time.perf_counter() - started
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            atomic_write_bytes(path, buf.getvalue())
            self._write_info(path, model, seed, seconds)
        return model.eval()

    def _fit(self, model: nn.Module, seed: int, progress: bool) -> None:
        """Adam at ``train_lr`` with cosine decay for ``epochs`` epochs; deterministic given ``seed``."""
        import torch
        from tqdm.auto import tqdm

        n = len(self.split.x_train)
        steps_per_epoch = n // self.train_batch_size if n > self.train_batch_size else 1
        total = self.epochs * steps_per_epoch
        opt = torch.optim.Adam(model.parameters(), lr=self.train_lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        gen = torch.Generator().manual_seed(seed)
        fill = float(self.split.x_train.min())  # the normalized background value
        model.train()
        with tqdm(total=total, desc=f"train {self.name} (seed {seed})", disable=not progress, leave=False) as bar:
            for epoch in range(self.epochs):
                for (x,), y in self.train_batches(self.train_batch_size, seed=seed * 1000 + epoch):
                    if self.max_shift:
                        x = _random_shift(x, self.max_shift, gen, fill=fill)
                    loss = self.loss(model(x), y)
                    if not torch.isfinite(loss):
                        raise RuntimeError(f"training {self.name} diverged (loss {loss.item()}) at epoch {epoch}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        model.eval()

    def _write_info(self, path: Path, model: nn.Module, seed: int, seconds: float) -> None:
        """A small JSON next to the weights: how they were made and how good they are."""
        import torch

        inputs, targets = self.test_set()
        with torch.no_grad():
            out = _predict(model, inputs[self.input_names[0]])
        info: dict[str, Any] = {
            "workload": self.name,
            "version": self.version,
            "seed": seed,
            "train_seconds": round(seconds, 2),
            "epochs": self.epochs,
            "train_lr": self.train_lr,
            "parameters": sum(p.numel() for p in model.parameters()),
            "test": self.score(out, targets),
            "torch": torch.__version__,
        }
        atomic_write_bytes(path.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())


def _predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import torch

    outs: list[np.ndarray] = []
    for start in range(0, len(x), batch_size):
        outs.append(model(torch.from_numpy(x[start : start + batch_size])).numpy())
    return np.concatenate(outs)


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator, fill: float) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with ``fill``."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), value=fill)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def predict(model: nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``model`` over an array in batches without gradients (a helper for tests and reports)."""
    import torch

    with torch.no_grad():
        return _predict(model, np.asarray(inputs), batch_size)


def load_cached(model: nn.Module, path: Path) -> bool:
    """Load cached weights into ``model``; False (with a warning) when the file is unusable."""
    import torch

    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # truncated file, other architecture: rebuild rather than fail
        warnings.warn(f"cached weights {path} are unusable ({type(e).__name__}: {e}); rebuilding them", stacklevel=3)
        return False
    return True
