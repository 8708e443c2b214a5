"""The issue's targets, each evaluated from the measured numbers of a run (never typed in).

On this 2-core CPU: served INT8 over served FP32 >= 3x throughput for resnet18 and resnet50 at request
batch 8; served INT8 throughput >= 90% of in-process INT8 at the same batch; minilm INT8 >= 2.5x
(served); quantplug's INT8 no slower than ONNX Runtime's own ``quantize_static`` output (in-process,
same threads, alternated).

Each target is judged on its median (``met``: median >= threshold). The spread of the individual ratios
it is the median of (in-process rounds, served A/B pairs) comes with it as ``spread`` [min, max]; a
target missed by its median but reached by some rounds is marked ``within_noise``: on a shared 2-core
machine such a miss is not evidence either way, and the report says so rather than rounding it to met.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SERVED_SPEEDUP", "evaluate_targets"]

SERVED_SPEEDUP = {"resnet18": 3.0, "resnet50": 3.0, "minilm": 2.5}  # served INT8 / served FP32, request batch
SERVED_EFFICIENCY = 0.90  # served INT8 throughput / in-process INT8 throughput
VS_PEER = 1.0  # peer latency / our latency, in-process (>= 1: ours is no slower)


def _get(data: Mapping[str, Any], *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _target(workload: str, what: str, measured: Any, threshold: float, unit: str, source: str,
            ratios: list[float] | None = None) -> dict[str, Any]:
    value = float(measured) if isinstance(measured, (int, float)) else None
    met = None if value is None else value >= threshold
    spread = [min(ratios), max(ratios)] if ratios else None
    return {"workload": workload, "target": what, "measured": value, "threshold": threshold, "unit": unit,
            "met": met, "spread": spread, "within_noise": bool(met is False and spread and spread[1] >= threshold),
            "source": source}


def _each(r: Mapping[str, Any], field: str, *path: str) -> list[float] | None:
    """``field`` of every record in the list at ``path`` (A/B pairs, efficiency probes)."""
    records = _get(r, *path)
    return [float(p[field]) for p in records] if records else None


def _round_ratios(r: Mapping[str, Any], batch: int, ours: str, peer: str) -> list[float] | None:
    rounds = _get(r, "in_process", f"batch_{batch}", "rounds_ms")
    if not rounds or ours not in rounds or peer not in rounds:
        return None
    return [p / o for p, o in zip(rounds[peer], rounds[ours], strict=True) if o > 0]



def evaluate_targets(results: Mapping[str, Any], batch: int) -> list[dict[str, Any]]:
    """One record per target and workload: ``measured`` (None when not measured), ``threshold``, ``met``."""
    out: list[dict[str, Any]] = []
    for name, r in results.items():
        variants = [k for k in _get(r, "models") or {} if k not in ("fp32", "peer")]
        if name in SERVED_SPEEDUP:
            for key in (variants or ["int8"]):
                label = "INT8" if key == "int8" else key.replace("int8_", "INT8 ")
                out.append(_target(name, f"served {label} / FP32 throughput >= {SERVED_SPEEDUP[name]}x "
                                         f"(request batch {batch})",
                                   _get(r, "served", "speedup_vs_fp32", key), SERVED_SPEEDUP[name], "x",
                                   f"workloads.{name}.served.speedup_vs_fp32.{key}",
                                   _each(r, "speedup_throughput", "served", "ab", key, "pairs")))
        out.append(_target(name, f"served INT8 >= {SERVED_EFFICIENCY:.0%} of in-process INT8 (batch {batch})",
                           _get(r, "efficiency", "int8"), SERVED_EFFICIENCY, "ratio",
                           f"workloads.{name}.efficiency.int8",
                           _each(r, "efficiency", "served", "efficiency_pairs", "int8")))
        out.append(_target(name, f"our INT8 no slower than the peer (in-process, batch {batch})",
                           _get(r, "in_process", f"batch_{batch}", "speedup_vs_peer", "int8"), VS_PEER, "x",
                           f"workloads.{name}.in_process.batch_{batch}.speedup_vs_peer.int8",
                           _round_ratios(r, batch, "int8", "peer")))
    return out
