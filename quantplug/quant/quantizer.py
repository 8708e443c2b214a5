"""Fake quantizers with a straight-through estimator.

Two kinds:

- :class:`ActQuantizer`: per-tensor activation quantizer. Its range is *fixed* after calibration
  (also during QAT/QAD: only the weights learn). In ``observe`` mode it passes the tensor through and
  feeds a fixed-memory :class:`~quantplug.quant.histogram.Histogram`; in ``dynamic`` mode it computes
  its range from each tensor at run time (ONNX Runtime's ``DynamicQuantizeLinear``).
- :class:`WeightQuantizer`: symmetric per-channel (axis 0) or per-group weight quantizer. Its scale is
  recomputed from the weight on every forward (per-channel absolute max times a fixed clip ratio that an
  MSE search may lower at calibration), so QAT sees exactly the scales the export will write.

Both use ``torch.fake_quantize_per_{tensor,channel}_affine``, whose gradient is the straight-through
estimator (identity inside the range, zero outside).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .histogram import Histogram

__all__ = ["ActQuantizer", "WeightQuantizer", "act_qrange", "weight_qrange"]

Mode = Literal["quant", "observe", "off", "dynamic"]


def act_qrange(dtype: str, bits: int = 8) -> tuple[int, int]:
    if dtype == "uint8":
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def weight_qrange(bits: int, qmax: int | None = None) -> tuple[int, int]:
    """Symmetric narrow range: [-127, 127] for 8 bits, [-7, 7] for 4 (zero point 0); ``qmax`` narrows it
    further (63 for 7-bit weights, exact on CPUs without VNNI: see :mod:`quantplug.cpu`)."""
    q = 2 ** (bits - 1) - 1
    if qmax is not None:
        if not 1 <= qmax <= q:
            raise ValueError(f"weight qmax={qmax} is outside 1..{q} for {bits}-bit weights")
        q = qmax
    return -q, q


class ActQuantizer(nn.Module):
    """Per-tensor fake quantization of an activation in the target's scheme."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, name: str, dtype: str = "uint8", symmetric: bool = False, bits: int = 8,
                 histogram_bins: int = 2048) -> None:
        super().__init__()
        self.qname = name
        self.dtype = dtype
        self.symmetric = symmetric
        self.bits = bits
        self.quant_min, self.quant_max = act_qrange(dtype, bits)
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.mode: Mode = "off"
        self.histogram_bins = histogram_bins
        self.histogram: Histogram | None = None
        self.calibrated = False
        self.model_input = False  # quantizes a graph input: calibrated with max (see compute_ranges)

    def extra_repr(self) -> str:
        return (f"{self.qname!r}, {self.dtype}, symmetric={self.symmetric}, mode={self.mode}, "
                f"scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}")

    def reset_histogram(self) -> None:
        self.histogram = Histogram(self.histogram_bins)

    def set_range(self, low: float, high: float) -> None:
        """Set scale and zero point from a real-valued range (always widened to include 0)."""
        scale, zp = range_to_qparams(low, high, self.quant_min, self.quant_max, self.symmetric)
        self.scale.fill_(scale)
        self.zero_point.fill_(zp)
        self.calibrated = True
        self.mode = "quant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point,
                                                         self.quant_min, self.quant_max)
        if self.mode == "observe":
            if self.histogram is None:
                self.reset_histogram()
            assert self.histogram is not None
            self.histogram.update(x.detach(), self.qname)
            return x
        if self.mode == "dynamic":
            lo = float(x.detach().min())
            hi = float(x.detach().max())
            scale, zp = range_to_qparams(lo, hi, self.quant_min, self.quant_max, self.symmetric)
            return torch.fake_quantize_per_tensor_affine(x, scale, zp, self.quant_min, self.quant_max)
        return x


def range_to_qparams(low: float, high: float, qmin: int, qmax: int, symmetric: bool) -> tuple[float, int]:
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        amax = max(-low, high)
        if qmin == 0:  # unsigned symmetric: zero point in the middle
            scale = max(2 * amax / (qmax - qmin), 1e-12)
            return scale, (qmax + 1) // 2
        return max(amax / qmax, 1e-12), 0
    scale = max((high - low) / (qmax - qmin), 1e-12)
    zp = int(round(qmin - low / scale))
    return scale, min(max(zp, qmin), qmax)


class WeightQuantizer(nn.Module):
    """Symmetric weight fake quantization, per-channel on axis 0 or per-group along the input axis."""

    clip_ratio: torch.Tensor

    def __init__(self, bits: int = 8, per_channel: bool = True, group_size: int | None = None,
                 out_channels: int = 1, qmax: int | None = None) -> None:
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel
        self.group_size = group_size
        self.quant_min, self.quant_max = weight_qrange(bits, qmax)
        self.enabled = True
        # Clip ratio per channel (per group for per-group): 1.0 = plain absolute max; lowered by MSE search.
        self.register_buffer("clip_ratio", torch.ones(out_channels))
        self.frozen: torch.Tensor | None = None  # set during export: the dequantized weight as a constant

    def extra_repr(self) -> str:
        g = f"group_size={self.group_size}" if self.group_size else ("per-channel" if self.per_channel else "per-tensor")
        return f"int{self.bits} [{self.quant_min}, {self.quant_max}], {g}"

    def _grouped(self, w: torch.Tensor) -> torch.Tensor:
        """Weight as rows that share one scale: [channels, -1] or [channels * groups, group_size]."""
        if self.group_size:
            return w.reshape(-1, self.group_size)
        if self.per_channel:
            return w.reshape(w.shape[0], -1)
        return w.reshape(1, -1)

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        rows = self._grouped(w.detach())
        amax = rows.abs().amax(dim=1)
        if self.clip_ratio.numel() == amax.numel():
            amax = amax * self.clip_ratio
        return (amax / self.quant_max).clamp_min(1e-12).float()

    def quantize(self, w: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.scale(w) if scale is None else scale
        rows = self._grouped(w)
        zp = torch.zeros(scale.numel(), dtype=torch.int32, device=w.device)
        out = torch.fake_quantize_per_channel_affine(rows, scale, zp, 0, self.quant_min, self.quant_max)
        return out.reshape(w.shape)

    def int_values(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer weight as int8 in the weight's shape, scale per row of :meth:`_grouped`)."""
        scale = self.scale(w)
        rows = self._grouped(w.detach())
        q = torch.clamp(torch.round(rows / scale[:, None]), self.quant_min, self.quant_max)
        return q.reshape(w.shape).to(torch.int8), scale

    def search_clip(self, w: torch.Tensor, steps: int = 40, lowest: float = 0.5) -> None:
        """Lower each row's clip ratio to minimise the squared quantization error (MSE weight scales)."""
        rows = self._grouped(w.detach()).float()
        amax = rows.abs().amax(dim=1).clamp_min(1e-12)
        best_err = torch.full_like(amax, float("inf"))
        best = torch.ones_like(amax)
        for r in torch.linspace(lowest, 1.0, steps, device=rows.device):
            s = (amax * r / self.quant_max)[:, None]
            q = torch.clamp(torch.round(rows / s), self.quant_min, self.quant_max) * s
            err = (q - rows).pow(2).sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, r.expand_as(best), best)
        self.clip_ratio = best.to(self.clip_ratio.device)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.frozen is not None:
            return self.frozen
        if not self.enabled:
            return w
        return self.quantize(w)
