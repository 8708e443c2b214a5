"""Range algorithms over a :class:`quantplug.quant.histogram.Histogram`.

Every function returns ``(low, high)``. ``symmetric`` means the scheme has zero point 0 (TensorRT), so the
answer is ``(-t, t)`` found on the histogram of ``|x|``; otherwise the range is asymmetric and, for
non-negative tensors (after ReLU), starts at 0.
"""

from __future__ import annotations

import numpy as np

from quantplug.quant.histogram import Histogram, max_range

__all__ = ["entropy_range", "max_range", "mse_range", "percentile_range"]


def _finish(h: Histogram, t: float, symmetric: bool) -> tuple[float, float]:
    """Threshold on |x| -> range, never wider than what was seen."""
    if symmetric:
        return -t, t
    if h.min >= 0:
        return 0.0, min(t, h.max)
    return max(-t, h.min), min(t, h.max)


def _cdf_value(counts: np.ndarray, edges_low: float, width: float, q: float) -> float:
    cdf = np.cumsum(counts)
    total = cdf[-1]
    if total <= 0:
        return 0.0
    i = int(np.searchsorted(cdf, q * total))
    i = min(i, len(counts) - 1)
    return edges_low + (i + 1) * width


def percentile_range(h: Histogram, symmetric: bool, percentile: float) -> tuple[float, float]:
    q = percentile / 100.0
    if symmetric:
        counts, width = h.abs_counts()
        return _finish(h, _cdf_value(counts, 0.0, width, q), True)
    if h.min >= 0:
        return 0.0, min(_cdf_value(h.counts, h.low, h.width, q), h.max)
    high = _cdf_value(h.counts, h.low, h.width, q)
    low = _cdf_value(h.counts, h.low, h.width, 1.0 - q) - h.width
    return max(min(low, 0.0), h.min), min(max(high, 0.0), h.max)


def _one_sided(h: Histogram, symmetric: bool) -> tuple[np.ndarray, float]:
    """Counts over [0, amax] for the threshold searches: |x| for signed data, x itself when x >= 0."""
    if h.min >= 0 and not symmetric:
        # Re-bin onto [0, high) so the first bin starts at zero.
        idx = np.clip((h.centers / (h.high / h.bins)).astype(np.int64), 0, h.bins - 1)
        counts = np.zeros(h.bins)
        np.add.at(counts, idx, h.counts)
        return counts, h.high / h.bins
    return h.abs_counts()


def _smooth(d: np.ndarray, eps: float = 1e-6) -> np.ndarray | None:
    """A normalised distribution with every empty bin given ``eps`` of the mass."""
    zeros = d == 0
    n_zero = int(zeros.sum())
    if n_zero == len(d) or eps * n_zero >= 1.0:
        return None
    out = d.astype(np.float64) * (1.0 - eps * n_zero)
    out[zeros] = eps
    return out


def entropy_range(h: Histogram, symmetric: bool, bits: int = 8) -> tuple[float, float]:
    """TensorRT-style KL calibration: the threshold whose quantized distribution diverges least."""
    counts, width = _one_sided(h, symmetric)
    nbins = len(counts)
    # Levels on the searched side: 128 for signed INT8 (one side of the grid), 256 for unsigned data.
    levels = 2 ** (bits - 1) if (symmetric or h.min < 0) else 2**bits
    if nbins <= levels or counts.sum() == 0:
        return max_range(h, symmetric)
    best_t, best_kl = nbins, np.inf
    stride = max(1, (nbins - levels) // 512)
    for i in range(levels, nbins + 1, stride):
        p = counts[:i].copy()
        p[i - 1] += counts[i:].sum()  # outliers are clipped into the last bin
        nonzero = p > 0
        # Quantize the first i bins into `levels` buckets, spreading each bucket's mass over its
        # non-empty bins.
        edges = np.linspace(0, i, levels + 1).astype(np.int64)
        starts = edges[:-1]
        src = counts[:i]
        sums = np.add.reduceat(src, starts)
        nz = np.add.reduceat(nonzero.astype(np.float64), starts)
        bucket = np.repeat(np.arange(levels), np.diff(edges))
        per_bin = np.divide(sums, nz, out=np.zeros_like(sums), where=nz > 0)[bucket]
        q = np.where(nonzero, per_bin, 0.0)
        # Compare as distributions (TensorRT/MXNet: p with outliers folded in, q without; both smoothed so
        # that a bin empty in one and not the other costs a finite amount).
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = _smooth(p / ps), _smooth(q / qs)
        if pn is None or qn is None:
            continue
        mask = pn > 0
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best_kl:
            best_kl, best_t = kl, i
    return _finish(h, (best_t + 0.5) * width, symmetric)


def mse_range(h: Histogram, symmetric: bool, bits: int = 8, steps: int = 128) -> tuple[float, float]:
    """The range (a scaled-down max range) minimising the expected squared quantization error."""
    c, n = h.centers, h.counts
    lo0, hi0 = max_range(h, symmetric)
    best, best_err = (lo0, hi0), np.inf
    qmax = 2**bits - 1
    for r in np.linspace(0.05, 1.0, steps):
        lo, hi = lo0 * r, hi0 * r
        scale = max((hi - lo) / qmax, 1e-12)
        zp = np.round(-lo / scale)
        qv = np.clip(np.round(c / scale) + zp, 0, qmax)
        err = float(np.sum(n * ((qv - zp) * scale - c) ** 2))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best
