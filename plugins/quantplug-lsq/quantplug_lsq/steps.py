"""Learnable step sizes attached to the engine's quantizers, and their write-back.

quantplug's engine (``quantplug.quant``) places two kinds of fake quantizers when it prepares a model:

- an activation quantizer per tensor (``ActQuantizer``), whose ``scale`` and ``zero_point`` buffers are
  what the QDQ export writes into each QuantizeLinear/DequantizeLinear pair;
- a weight quantizer per conv/linear/embedding (``WeightQuantizer``), whose per-row scale is
  ``absmax(row) * clip_ratio / Qp``; the export writes exactly that scale.

LSQ does not replace them. :func:`learned_steps` adds one :class:`ActivationStep` or
:class:`WeightStep` (an ``nn.Parameter`` per quantizer) under ``model.lsq_steps``, so any optimizer
over ``model.parameters()`` trains them, and puts a forward hook on each engine quantizer that swaps its
output for the LSQ fake quantization. The hooks also keep the engine's buffers equal to the current
steps, so everything else that reads them (e.g. the INT32 bias rounding the engine emulates for ONNX
Runtime) sees the learned values. On exit the steps are written back into those buffers (``scale``;
``clip_ratio = step * Qp / absmax``), the hooks and parameters are removed, and the model is a plain
engine model again: the engine's export writes the learned step sizes, and its PyTorch forward is the
one ONNX Runtime reproduces.

Zero points: an asymmetric (UINT8, ONNX Runtime) activation keeps its calibrated zero point ``z`` fixed
and learns only the step, on the grid ``[quant_min - z, quant_max - z]``; symmetric schemes
(TensorRT: INT8, zero point 0) are the special case ``z = 0``. Learning ``z`` too (LSQ+) would need a
rounding step at write-back, because the runtime's zero point is an integer.

Why logarithms: the paper trains steps with SGD, where the gradient scale ``g = 1 / sqrt(N * Qp)``
balances how fast steps and weights move. quantplug fine-tunes with Adam, which divides each parameter's
gradient by its own running magnitude: ``g`` cancels, and every parameter moves by about ``lr`` per
iteration *in absolute terms*. Steps span orders of magnitude (1e-5 for a nearly dead channel's weights,
0.1 for a wide activation), so a plain step parameter is pushed through zero (seen here: weight steps
collapsed, INT32 biases overflowed and ONNX Runtime no longer matched PyTorch). Each step is therefore
stored as ``log(step) / rate``: it stays positive, and Adam changes it by about ``rate * lr``
*relative* per iteration, whatever its size. ``g`` is still applied, so the gradients are the paper's
and an SGD loop would get the paper's balance.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from quantplug import ConfigError, QuantContext

from .ste import gradient_scale, lsq_fake_quant

__all__ = ["INITS", "ActivationStep", "LearnedSteps", "WeightStep", "learned_steps"]

Init = Literal["calibrated", "paper"]
INITS: tuple[str, ...] = ("calibrated", "paper")
MIN_STEP = 1e-12  # guards logs of all-zero weight rows
DEFAULT_RATE = 10.0


def log_step(step: torch.Tensor, rate: float) -> torch.Tensor:
    """The parameter that stores ``step``: ``log(step) / rate`` (so ``step = exp(rate * parameter)``)."""
    return (step.float().clamp_min(MIN_STEP).log() / rate).clone()
ATTRIBUTE = "lsq_steps"  # where the step parameters live on the model while training


class ActivationStep(nn.Module):
    """The learnable per-tensor step of one activation quantizer (its zero point stays fixed)."""

    def __init__(self, quantizer: Any, init: Init = "calibrated", rate: float = 1.0) -> None:
        super().__init__()
        self.qname = str(quantizer.qname)
        self.zero_point = int(quantizer.zero_point)
        self.qmin, self.qmax = int(quantizer.quant_min), int(quantizer.quant_max)
        self.qn, self.qp = self.qmin - self.zero_point, self.qmax - self.zero_point  # the paper's Qn, Qp
        self.levels = max(self.qp, -self.qn)  # levels on the larger side of zero (Qp when z = 0)
        self.rate = rate
        self.log_step = nn.Parameter(log_step(quantizer.scale.detach().float().reshape(()), rate))
        self.initial = float(self.step().detach())
        self.pending_init = init == "paper"  # the paper's init needs data: done on the first batch

    def step(self) -> torch.Tensor:
        return torch.exp(self.log_step * self.rate)

    def extra_repr(self) -> str:
        return f"{self.qname!r}, grid=[{self.qn}, {self.qp}], step={float(self.step()):.4g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pending_init:
            with torch.no_grad():
                first = 2 * x.detach().float().abs().mean() / math.sqrt(self.levels)
                self.log_step.copy_(log_step(first, self.rate))
            self.initial = float(self.step().detach())
            self.pending_init = False
        per_sample = x[0].numel() if x.dim() > 1 else x.numel()  # the paper's N: features in the layer
        g = gradient_scale(per_sample, self.levels)
        return lsq_fake_quant(x, self.step(), self.qmin, self.qmax, g, self.zero_point)


class WeightStep(nn.Module):
    """Learnable steps of one layer's weight quantizer: one per output channel (or per group/tensor)."""

    def __init__(self, layer: Any, init: Init = "calibrated", rate: float = 1.0) -> None:
        super().__init__()
        wq = layer.weight_quant
        self.qname = str(layer.qname)
        self.qn, self.qp = int(wq.quant_min), int(wq.quant_max)
        self.group_size: int | None = wq.group_size
        self.per_channel = bool(wq.per_channel)
        w = layer.weight.detach().float()
        if init == "paper":
            step = 2 * self.rows(w).abs().mean(dim=1) / math.sqrt(self.qp)
        else:  # the engine's calibrated scale (absmax x clip ratio; MSE-searched for INT4)
            step = wq.scale(w)
        self.rate = rate
        self.log_step = nn.Parameter(log_step(step.detach(), rate))
        self.initial = self.step().detach().clone()

    def step(self) -> torch.Tensor:
        return torch.exp(self.log_step * self.rate)

    def extra_repr(self) -> str:
        return f"{self.qname!r}, grid=[{self.qn}, {self.qp}], steps={self.log_step.numel()}"

    def rows(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` as rows that share one step, in the engine's layout (per group, per channel, per tensor)."""
        if self.group_size:
            return w.reshape(-1, self.group_size)
        if self.per_channel:
            return w.reshape(w.shape[0], -1)
        return w.reshape(1, -1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        rows = self.rows(w)
        # The step, computed the way the engine will compute it from the written-back clip ratio
        # (absmax * ratio / Qp): equal to the step, gradient 1, and bit-identical to the exported scale.
        absmax = rows.detach().float().abs().amax(dim=1)
        step = absmax * (self.step() * self.qp / absmax.clamp_min(MIN_STEP)) / self.qp
        out = lsq_fake_quant(rows, step[:, None], self.qn, self.qp, gradient_scale(rows.shape[1], self.qp))
        return out.reshape(w.shape)

    @torch.no_grad()
    def clip_ratio(self, w: torch.Tensor) -> torch.Tensor:
        """The engine's ``clip_ratio`` that makes its scale ``absmax * ratio / Qp`` equal the learned step."""
        absmax = self.rows(w.detach().float()).abs().amax(dim=1).clamp_min(1e-12)
        return self.step().detach() * self.qp / absmax


class LearnedSteps:
    """The LSQ steps attached to one model: :meth:`write_back` ends it (see :func:`learned_steps`)."""

    def __init__(self, model: nn.Module, init: Init = "calibrated", rate: float = DEFAULT_RATE) -> None:
        if init not in INITS:
            raise ConfigError(f"LSQ init {init!r} is not one of {', '.join(INITS)}")
        if hasattr(model, ATTRIBUTE):
            raise ConfigError(f"the model already has an attribute {ATTRIBUTE!r}; LSQ steps are attached once")
        self.model = model
        self.activations: list[tuple[Any, ActivationStep]] = [
            (q, ActivationStep(q, init, rate)) for q in QuantContext.activation_quantizers(model) if q.mode == "quant"
        ]
        layers: list[Any] = QuantContext.weight_layers(model)
        self.weights: list[tuple[Any, WeightStep]] = [
            (layer, WeightStep(layer, init, rate)) for layer in layers if layer.weight_quant.enabled
        ]
        model.add_module(ATTRIBUTE, nn.ModuleList([s for _, s in self.activations] + [s for _, s in self.weights]))
        self._handles = [q.register_forward_hook(_activation_hook(s)) for q, s in self.activations]
        self._handles += [layer.weight_quant.register_forward_hook(_weight_hook(s)) for layer, s in self.weights]

    @torch.no_grad()
    def write_back(self) -> dict[str, Any]:
        """Copy the learned steps into the engine's buffers, remove hooks and parameters; a summary."""
        for q, act in self.activations:
            q.scale.copy_(act.step().detach().reshape(q.scale.shape))
        for layer, ws in self.weights:
            layer.weight_quant.clip_ratio.copy_(ws.clip_ratio(layer.weight))
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if hasattr(self.model, ATTRIBUTE):
            delattr(self.model, ATTRIBUTE)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """How far the steps moved from their initial values (median and max of |log(final / initial)|)."""
        def moves(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
            if not pairs:
                return {"count": 0}
            change = torch.cat([(f.clamp_min(MIN_STEP) / i.clamp_min(MIN_STEP)).log().abs().reshape(-1)
                                for f, i in pairs])
            return {"count": int(change.numel()), "median_abs_log_change": float(change.median()),
                    "max_abs_log_change": float(change.max())}

        acts = [(s.step().detach().reshape(1), torch.tensor([s.initial])) for _, s in self.activations]
        ws = [(s.step().detach(), s.initial) for _, s in self.weights]
        return {"activation_steps": moves(acts), "weight_steps": moves(ws)}


def _activation_hook(step: ActivationStep) -> Any:
    def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
        if module.mode != "quant":  # observing or off: leave the engine's behaviour alone
            return None
        out = step(args[0])
        with torch.no_grad():  # keep the engine's scale equal to the step (read by its bias rounding)
            module.scale.copy_(step.step().detach().reshape(module.scale.shape))
        return out

    return hook


def _weight_hook(step: WeightStep) -> Any:
    def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
        if module.frozen is not None or not module.enabled:
            return None
        w = args[0]
        out = step(w)
        with torch.no_grad():  # the engine's scale(w) now returns the learned step (bias rounding reads it)
            module.clip_ratio.copy_(step.clip_ratio(w))
        return out

    return hook


@contextlib.contextmanager
def learned_steps(model: nn.Module, init: Init = "calibrated", rate: float = DEFAULT_RATE) -> Iterator[LearnedSteps]:
    """Attach LSQ steps to a calibrated engine model; on exit write them back and detach.

    Inside, ``model.parameters()`` includes the steps (train them with the weights) and the model's
    forward is LSQ's. After, the model is an ordinary engine model whose quantizers hold the learned
    steps. ``init``: ``"calibrated"`` starts from the engine's calibrated scales, ``"paper"`` from
    ``2 * mean|x| / sqrt(Qp)`` (weights at once, activations on the first batch).
    """
    steps = LearnedSteps(model, init, rate)
    try:
        yield steps
    finally:
        steps.write_back()
