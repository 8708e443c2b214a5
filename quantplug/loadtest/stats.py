"""Statistics of a load-test run, computed from exact per-request timings.

Percentiles are numpy's linear-interpolation percentiles of the successful requests' exact times (not
locust's histogram, which rounds to whole milliseconds under 100 ms). Throughput counts successful
requests per second over the measured window: from the first request started after the warm-up to the
last request's end. Failures are counted separately and never dropped.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .timings import Timings

__all__ = ["RunStats", "exact_percentiles", "compute_stats", "pool_stats", "ratio", "median_or_none"]


def exact_percentiles(ms: np.ndarray, qs: Sequence[float] = (50, 95, 99)) -> tuple[float, ...]:
    """Percentiles of exact times in ms (NaN when there are none)."""
    if ms.size == 0:
        return tuple(math.nan for _ in qs)
    return tuple(float(v) for v in np.percentile(ms, list(qs)))


@dataclass
class RunStats:
    """One locust run against one model (or several runs of one model pooled)."""

    model: str
    requests: int  # every request answered, failures included
    failures: int
    throughput_rps: float  # successful requests per second
    throughput_ips: float  # successful inferences per second (requests x batch size)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    window_s: float
    batch_size: int
    users: int
    workers: int
    runs: int = 1
    errors: dict[str, int] = field(default_factory=dict)  # error text -> count (top 10)
    notes: list[str] = field(default_factory=list)  # e.g. a locust process that hung and was killed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.requests > 0


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def _top(errors: dict[str, int], n: int = 10) -> dict[str, int]:
    return dict(sorted(errors.items(), key=lambda kv: -kv[1])[:n])


def _window(t: Timings, warmup_s: float) -> tuple[np.ndarray, float]:
    """Mask of the measured requests and the window length in seconds."""
    if len(t) == 0:
        return np.zeros(0, dtype=bool), 0.0
    begin = float(t.start.min()) + warmup_s
    mask = t.start >= begin
    if not mask.any():
        return mask, 0.0
    end = float(np.max(t.start[mask] + t.ms[mask] / 1000.0))
    return mask, max(end - float(t.start[mask].min()), 1e-9)


def compute_stats(t: Timings, model: str, *, batch_size: int, users: int, workers: int,
                  warmup_s: float = 0.0) -> RunStats:
    mask, window = _window(t, warmup_s)
    ok = t.ok[mask]
    ok_ms = t.ms[mask][ok]
    n, nok = int(mask.sum()), int(ok.sum())
    p50, p95, p99 = exact_percentiles(ok_ms)
    rps = nok / window if window > 0 else 0.0
    return RunStats(
        model=model, requests=n, failures=n - nok, throughput_rps=round(rps, 4),
        throughput_ips=round(rps * batch_size, 4), p50_ms=_clean(p50), p95_ms=_clean(p95), p99_ms=_clean(p99),
        mean_ms=_clean(float(ok_ms.mean())) if nok else None, max_ms=_clean(float(ok_ms.max())) if nok else None,
        window_s=round(window, 4), batch_size=batch_size, users=users, workers=workers,
        errors=_top(t.errors),
    )


def pool_stats(parts: Sequence[tuple[Timings, RunStats]], warmup_s: float = 0.0) -> RunStats:
    """Several runs of one model as one: counts and windows summed, percentiles over all exact times."""
    if not parts:
        raise ValueError("pool_stats needs at least one run")
    first = parts[0][1]
    ms = [t.ms[_window(t, warmup_s)[0] & t.ok] for t, _ in parts]
    all_ms = np.concatenate(ms) if ms else np.zeros(0)
    p50, p95, p99 = exact_percentiles(all_ms)
    requests = sum(s.requests for _, s in parts)
    failures = sum(s.failures for _, s in parts)
    window = sum(s.window_s for _, s in parts)
    rps = (requests - failures) / window if window > 0 else 0.0
    errors: dict[str, int] = {}
    for _, s in parts:
        for k, v in s.errors.items():
            errors[k] = errors.get(k, 0) + v
    return RunStats(
        model=first.model, requests=requests, failures=failures, throughput_rps=round(rps, 4),
        throughput_ips=round(rps * first.batch_size, 4), p50_ms=_clean(p50), p95_ms=_clean(p95),
        p99_ms=_clean(p99), mean_ms=_clean(float(all_ms.mean())) if all_ms.size else None,
        max_ms=_clean(float(all_ms.max())) if all_ms.size else None, window_s=round(window, 4),
        batch_size=first.batch_size, users=first.users, workers=first.workers, runs=len(parts),
        errors=_top(errors), notes=[n for _, s in parts for n in s.notes],
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0 or numerator <= 0:
        return None
    return round(numerator / denominator, 4)


def median_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 4) if vals else None
