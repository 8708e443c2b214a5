"""The A/B result as text tables, JSON, a PNG chart and a self-contained HTML page (all written atomically)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..report import format_table, write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["format_pair", "format_summary", "write_json", "write_png", "write_html", "chart_png"]


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _x(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


_COLUMNS = [
    ("role", "role", None),
    ("model", "model", None),
    ("requests", "requests", str),
    ("failures", "failures", str),
    ("req/s", "throughput_rps", lambda v: f"{v:.1f}"),
    ("infer/s", "throughput_ips", lambda v: f"{v:.1f}"),
    ("p50 ms", "p50_ms", _ms),
    ("p95 ms", "p95_ms", _ms),
    ("p99 ms", "p99_ms", _ms),
]


def _rows(source: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"role": role, **source[role]} for role in ("baseline", "candidate")]


def format_pair(record: Mapping[str, Any]) -> str:
    """One pair's table and its ratios."""
    rows = [{"role": role, **record[role]} for role in record["order"]]
    notes = [n for role in record["order"] for n in record[role].get("notes", [])]
    text = (f"pair {record['pair']} (order: {' then '.join(record['order'])})\n"
            + format_table(rows, _COLUMNS)
            + f"\nspeed-up: throughput {_x(record['speedup_throughput'])}, p50 {_x(record['speedup_p50'])}")
    return text + "".join(f"\nnote: {n}" for n in notes)


def format_summary(result: Mapping[str, Any]) -> str:
    """All runs pooled per model, the summary speed-ups, failures and the gate."""
    s = result["settings"]
    done = (f"{len(result['pairs'])} of {s['pairs']} pairs (interrupted)" if result.get("interrupted")
            else f"{s['pairs']} pairs")
    lines = [f"summary over {done} ({s['users']} users, batch {s['batch_size']}, "
             f"{s['duration_s']} s per run, {s['workers']} workers; speed-ups are medians of per-pair ratios)",
             format_table(_rows(result), _COLUMNS),
             f"speed-up: throughput {_x(result['speedup_throughput'])}, p50 {_x(result['speedup_p50'])}"]
    for role in ("baseline", "candidate"):
        for error, count in result[role].get("errors", {}).items():
            lines.append(f"{role} failure x{count}: {error}")
    gate = result.get("gate")
    if gate is not None:
        lines.append(f"gate: {'PASS' if gate['passed'] else 'FAIL'}: {gate['reason']}")
    return "\n".join(lines)


def write_json(path: str | Path, result: Mapping[str, Any]) -> Path:
    return write_json_atomic(path, result)


def chart_png(result: Mapping[str, Any]) -> bytes:
    """Throughput per pair (left) and p50/p95/p99 per pair (right), baseline vs candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pairs = result["pairs"]
    roles = ("baseline", "candidate")
    names = {r: result[r]["model"] for r in roles}
    colors = {"baseline": "#8c8c8c", "candidate": "#2a7ab9"}
    x = np.arange(len(pairs))
    width = 0.38
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    for k, role in enumerate(roles):
        ips = [p[role]["throughput_ips"] for p in pairs]
        bars = ax1.bar(x + (k - 0.5) * width, ips, width, label=f"{role}: {names[role]}", color=colors[role])
        ax1.bar_label(bars, fmt=lambda v: f"{v:.0f}" if v >= 100 else f"{v:.1f}", fontsize=8, padding=2)
    top = max([p[r]["throughput_ips"] for p in pairs for r in roles] + [1.0])
    for i, p in enumerate(pairs):
        ax1.text(i, top * 1.12, f"{_x(p['speedup_throughput'])}", ha="center", fontsize=10, fontweight="bold")
    ax1.set_ylim(0, top * 1.45)
    ax1.set_xticks(x, [f"pair {p['pair']}" for p in pairs])
    ax1.set_ylabel("inferences / s (higher is better)")
    ax1.set_title(f"throughput (batch {result['settings']['batch_size']}); bold: speed-up")
    ax1.legend(loc="upper left", fontsize=8)

    for k, role in enumerate(roles):
        pos = x + (k - 0.5) * width
        p50 = [p[role]["p50_ms"] or 0.0 for p in pairs]
        p95 = [p[role]["p95_ms"] if p[role]["p95_ms"] is not None else np.nan for p in pairs]
        p99 = [p[role]["p99_ms"] if p[role]["p99_ms"] is not None else np.nan for p in pairs]
        bars = ax2.bar(pos, p50, width, color=colors[role], label=f"{role} p50")
        ax2.bar_label(bars, fmt=lambda v: f"{v:.0f}" if v >= 100 else f"{v:.2f}", fontsize=8, label_type="center",
                      color="white")
        ax2.vlines(pos, p50, p99, color="black", linewidth=1)  # whisker from p50 up to p99
        ax2.scatter(pos, p95, marker="D", color="black", s=18, zorder=3, label="p95" if k == 0 else None)
        ax2.scatter(pos, p99, marker="^", color="black", s=28, zorder=3, label="p99" if k == 0 else None)
    ax2.set_xticks(x, [f"pair {p['pair']}" for p in pairs])
    ax2.set_ylabel("latency ms (lower is better)")
    ax2.set_title("latency: bar p50, diamond p95, triangle p99")
    highest = max([v for p in pairs for r in roles for q in ("p50_ms", "p95_ms", "p99_ms")
                   if (v := p[r][q]) is not None] + [1.0])
    ax2.set_ylim(0, highest * 1.3)  # headroom: the legend sits above the tallest whisker
    ax2.legend(fontsize=8, loc="upper center", ncol=4)
    fig.suptitle(f"{names['baseline']} vs {names['candidate']}: throughput speed-up "
                 f"{_x(result['speedup_throughput'])}, p50 speed-up {_x(result['speedup_p50'])} (median of pairs)",
                 fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_png(path: str | Path, result: Mapping[str, Any]) -> Path:
    return write_bytes_atomic(path, chart_png(result))


def write_html(path: str | Path, result: Mapping[str, Any]) -> Path:
    """One self-contained page: summary, pairs, chart (embedded), machine and settings."""
    esc = html.escape
    png = base64.b64encode(chart_png(result)).decode()
    pairs = "".join(f"<pre>{esc(format_pair(p))}</pre>" for p in result["pairs"])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>quantplug loadtest: {esc(result['baseline']['model'])} vs
{esc(result['candidate']['model'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} pre{{background:#f6f6f6;padding:.6em}}</style>
</head><body>
<h1>{esc(result['baseline']['model'])} vs {esc(result['candidate']['model'])}</h1>
<h2>Summary</h2><pre>{esc(format_summary(result))}</pre>
<img alt="throughput and latency per pair" src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Pairs</h2>{pairs}
<h2>Machine</h2><pre>{esc(json.dumps(result.get('machine', {}), indent=2))}</pre>
<h2>Server</h2><pre>{esc(json.dumps(result.get('server', {}), indent=2))}</pre>
<h2>Settings</h2><pre>{esc(json.dumps(result.get('settings', {}), indent=2, default=str))}</pre>
</body></html>
"""
    return write_text_atomic(path, page)
