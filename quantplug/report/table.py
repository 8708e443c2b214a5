"""Plain-text tables (Markdown-compatible) and small statistics helpers."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[str, str, Callable[[Any], str] | None]  # (header, key, formatter)


def _cell(value: Any, fmt: Callable[[Any], str] | None) -> str:
    if value is None:
        return "n/a"
    if fmt is not None:
        return fmt(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A Markdown table; a missing value or None prints as ``n/a``, a string value prints as itself."""
    header = [c[0] for c in columns]
    body = [[v if isinstance(v := row.get(key), str) else _cell(v, fmt) for _, key, fmt in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body]
    return "\n".join(lines)


def mean_spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    vals = [float(v) for v in values]
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }
