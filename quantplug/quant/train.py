"""Fine-tuning with fake quantization (QAT and QAD) with divergence detection.

Activation ranges stay fixed at their calibrated values while training; weight scales follow the weights
(per-channel absolute max each step), so the exported model has exactly the scales that were trained.
The optimizer is Adam at ``recipe.lr_scale`` times the workload's training learning rate, decayed to
zero over the fine-tuning steps with a cosine schedule: the FP32 model usually ended its own training
at a near-zero learning rate, and a constant restart rate shakes a converged model (seen on
mnist-resnet: 99.0% -> 97.1% after one constant-rate QAT epoch). Inputs and labels follow the model's
device, so QAT runs on a GPU when the model is there.

Dropout stays off while fine-tuning unless ``recipe.train_dropout``: the fine-tuning is a small correction
to a converged model, and dropout's noise is larger than it (seen on minilm QAD: with dropout the
distillation loss stayed at 0.05, five times the quantization error it was meant to remove).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import TrainingDivergedError
from .calibrate import as_inputs
from .context import QuantContext
from .device import model_device, to_device

__all__ = ["DivergenceMonitor", "finetune", "first_output"]

LossFn = Callable[[Any, tuple[torch.Tensor, ...], Any], torch.Tensor]


def first_output(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, tuple | list):
        return first_output(out[0])
    raise TypeError(f"cannot read a tensor from model output of type {type(out).__name__}")


class DivergenceMonitor:
    """Averages the loss over windows; diverged = a NaN/Inf loss, or ``patience`` consecutive rising
    windows ending above ``factor`` times the best window."""

    def __init__(self, method: str, window: int = 20, patience: int = 4, factor: float = 1.5,
                 lr: float = 0.0) -> None:
        self.method, self.window, self.patience, self.factor, self.lr = method, window, patience, factor, lr
        self._buf: list[float] = []
        self.means: list[float] = []
        self.rises = 0

    def update(self, loss: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"{self.method} diverged at epoch {epoch + 1} step {step}: the loss became {loss}; lower the "
                f"learning rate (lr_scale, now giving lr={self.lr:g}) or check the data for NaN/Inf"
            )
        self._buf.append(loss)
        if len(self._buf) < self.window:
            return
        mean = sum(self._buf) / len(self._buf)
        self._buf.clear()
        self.rises = self.rises + 1 if self.means and mean > self.means[-1] else 0
        self.means.append(mean)
        best = min(self.means)
        if self.rises >= self.patience and mean > self.factor * best:
            raise TrainingDivergedError(
                f"{self.method} diverged at epoch {epoch + 1} step {step}: the loss rose for {self.rises} "
                f"consecutive checks, from {best:.4g} to {mean:.4g}; lower lr_scale (lr was {self.lr:g}) "
                "or use fewer epochs"
            )


def _epoch_batches(ctx: QuantContext, epoch: int) -> Any:
    """One epoch of training batches, as a sized collection (a generator is listed; a DataLoader is kept)."""
    batches = ctx.train_batches(epoch)
    return batches if hasattr(batches, "__len__") else list(batches)


def _inputs_and_labels(batch: Any, device: torch.device) -> tuple[tuple[torch.Tensor, ...], Any]:
    """A training batch, ``(inputs, labels)`` or bare inputs, on ``device``."""
    if isinstance(batch, tuple | list) and len(batch) == 2 and isinstance(batch[0], tuple | list):
        labels = batch[1]
        if isinstance(labels, torch.Tensor):
            labels = labels.to(device, non_blocking=True)
        return to_device(tuple(batch[0]), device), labels
    return to_device(as_inputs(batch), device), None


def finetune(model: nn.Module, ctx: QuantContext, loss_fn: LossFn, desc: str) -> nn.Module:
    """Train ``model`` (fake-quant) for ``recipe.qat_epochs`` epochs with ``loss_fn(outputs, inputs, labels)``."""
    recipe = ctx.recipe
    if recipe.qat_epochs == 0:
        return model
    lr = recipe.lr_scale * ctx.train_lr
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    first = _epoch_batches(ctx, 0)
    total_steps = recipe.qat_epochs * len(first)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps) if total_steps else None
    device = model_device(model)
    monitor = DivergenceMonitor(desc, lr=lr)
    torch.manual_seed(recipe.seed)
    from tqdm.auto import tqdm

    history: list[float] = []
    step = 0
    model.train()
    with contextlib.nullcontext() if recipe.train_dropout else dropout_off(model):
        for epoch in range(recipe.qat_epochs):
            total, n = 0.0, 0
            batches = first if epoch == 0 else _epoch_batches(ctx, epoch)
            bar = tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{recipe.qat_epochs}",
                       unit="batch", disable=not ctx.progress, leave=False)
            for batch in bar:
                inputs, labels = _inputs_and_labels(batch, device)
                out = model(*inputs)
                loss = loss_fn(out, inputs, labels)
                value = float(loss.detach())
                step += 1
                monitor.update(value, epoch, step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None and sched.last_epoch < total_steps:
                    sched.step()
                total += value
                n += 1
                if ctx.progress:
                    bar.set_postfix(loss=f"{value:.4f}")
            history.append(total / max(n, 1))
    model.eval()
    ctx.log.setdefault("train_loss", {})[desc] = history
    ctx.log["train_lr"] = lr
    return model


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[None]:
    """Every dropout's probability at 0 inside the block, restored after. Setting ``p`` (rather than eval
    mode) also covers models that read ``dropout.p`` themselves, like transformers' attention."""
    saved = [(m, m.p) for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    try:
        for m, _ in saved:
            m.p = 0.0
        yield
    finally:
        for m, p in saved:
            m.p = p
