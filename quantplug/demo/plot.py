"""The demo's chart: accuracy drop and served speed-up per method, and the INT4 comparison over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    rows = report["rows"]
    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)

    ax = axes[0]
    drops = [r["accuracy_drop_pts"] for r in rows]
    bars = ax.bar(labels, drops, color=["#c0392b" if d > 0.5 else "#2e86c1" for d in drops])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(f"{report['workload']}: accuracy drop, served (pts)\nFP32 {report['fp32']['accuracy']:.2f}%")
    ax.set_ylabel("FP32 minus quantized, percentage points")
    ax.bar_label(bars, labels=[f"{d:+.2f}" for d in drops], padding=2, fontsize=8)

    ax = axes[1]
    speed = [r.get("speedup") or 0.0 for r in rows]
    bars = ax.bar(labels, speed, color="#27ae60")
    ax.axhline(1, color="black", linewidth=0.8, linestyle="--")
    ax.set_title(f"served throughput vs FP32 (Triton, gRPC, batch {report['settings']['batch_size']})")
    ax.set_ylabel("speed-up (x)")
    ax.bar_label(bars, labels=[f"{s:.2f}x" for s in speed], padding=2, fontsize=8)
    for t in (*axes[0].get_xticklabels(), *axes[1].get_xticklabels()):
        t.set_rotation(20)

    ax = axes[2]
    int4 = report["int4"]
    names = [r["method"] for r in int4["rows"]]
    means = [r["accuracy_mean"] for r in int4["rows"]]
    stds = [r["accuracy_std"] for r in int4["rows"]]
    bars = ax.bar(names, means, yerr=stds, capsize=5, color="#8e44ad")
    fp = int4["fp32_accuracy"]
    ax.axhline(fp["mean"], color="black", linestyle="--", linewidth=1, label=f"FP32 {fp['mean']:.2f}%")
    for i, r in enumerate(int4["rows"]):
        ax.scatter([i] * len(r["seeds"]), [s["accuracy"] for s in r["seeds"]], color="black", s=10, zorder=3)
    low = min(min(s["accuracy"] for r in int4["rows"] for s in r["seeds"]), fp["mean"])
    ax.set_ylim(max(0.0, low - 3), 100.5)
    ax.set_title(f"{int4['workload']} W4A8, {len(int4['rows'][0]['seeds'])} seeds\n(mean ± std; dots: each seed)")
    ax.set_ylabel("accuracy (%)")
    ax.bar_label(bars, labels=[f"{m:.2f}" for m in means], padding=2, fontsize=8)
    ax.legend(loc="lower right")

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
