"""A fixed-memory activation histogram that re-bins when the range grows.

Memory is ``bins`` counts per tensor, whatever the number of batches: when a batch falls outside the
current range, the range widens by an integer factor ``k`` and every ``k`` old bins merge exactly into one
new bin (the new lower edge stays on the old bin grid, so no count is ever split).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import CalibrationError

__all__ = ["Histogram", "max_range"]


class Histogram:
    """Counts of a tensor's values over ``[low, low + bins * width)``, plus the exact min and max."""

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.float64)
        self.low = 0.0
        self.width = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.batches = 0

    @property
    def high(self) -> float:
        return self.low + self.bins * self.width

    @property
    def edges(self) -> np.ndarray:
        return self.low + self.width * np.arange(self.bins + 1)

    @property
    def centers(self) -> np.ndarray:
        return self.low + self.width * (np.arange(self.bins) + 0.5)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def update(self, x: torch.Tensor, name: str = "?") -> None:
        x = x.detach().float().reshape(-1)
        if x.numel() == 0:
            return
        lo_t, hi_t = torch.aminmax(x)  # NaN propagates into both, and an Inf shows as a bound
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int((~torch.isfinite(x)).sum())
            raise CalibrationError(
                f"activation {name!r} has {bad} NaN/Inf value(s) in calibration batch {self.batches + 1}; "
                "check the model's FP32 output on this data (input normalisation, weights) before quantizing"
            )
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if self.width == 0.0:
            span = hi - lo
            if span <= 0:
                span = max(abs(hi), 1e-8) * 1e-3 + 1e-8
            self.low = lo
            self.width = span * (1 + 1e-6) / self.bins
        elif lo < self.low or hi >= self.high:
            self._grow(lo, hi)
        counts = torch.histc(x, self.bins, min=self.low, max=self.low + self.bins * self.width)
        self.counts += counts.double().cpu().numpy()
        self.batches += 1

    def _grow(self, lo: float, hi: float) -> None:
        lo, hi = min(lo, self.low), max(hi, self.high)
        k = max(2, int((hi - lo) / (self.bins * self.width)))
        while True:
            new_width = self.width * k
            m = math.ceil((self.low - lo) / new_width - 1e-12)  # new bins below the old lower edge
            new_low = self.low - m * new_width
            if new_low + self.bins * new_width > hi:
                break
            k += 1
        # Old bin i starts at low + i*width = new_low + (i + m*k)*width: it lands in new bin (i + m*k) // k.
        target = (np.arange(self.bins) + m * k) // k
        counts = np.zeros(self.bins, dtype=np.float64)
        np.add.at(counts, target, self.counts)
        self.counts, self.low, self.width = counts, new_low, new_width

    def abs_counts(self) -> tuple[np.ndarray, float]:
        """The histogram of ``|x|`` on ``bins`` bins over ``[0, amax]``: (counts, bin width)."""
        amax = max(abs(self.min), abs(self.max), 1e-12)
        width = amax / self.bins
        idx = np.clip((np.abs(self.centers) / width).astype(np.int64), 0, self.bins - 1)
        counts = np.zeros(self.bins, dtype=np.float64)
        np.add.at(counts, idx, self.counts)
        return counts, width


def max_range(h: Histogram, symmetric: bool) -> tuple[float, float]:
    """The full observed range of ``h``, widened to include zero (symmetric: +-max |x|)."""
    if symmetric:
        amax = max(abs(h.min), abs(h.max))
        return -amax, amax
    return min(h.min, 0.0), max(h.max, 0.0)
