"""Served measurements: one embedded Triton with a workload's models, locust A/B runs FP32 vs each INT8.

Every model is a python-backend model around ONNX Runtime with the same intra-op thread count as the
in-process measurements. Each comparison is :func:`quantplug.loadtest.run_ab` (baseline and candidate
alternated A B A B, exact per-request timings; the speed-up is the median of the per-pair throughput
ratios). Requests carry real held-out test inputs at the request batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["model_name", "serve_and_load_test"]


def model_name(workload: str, key: str) -> str:
    return f"bench_{workload.replace('-', '_')}_{key}"


def _write_repository(repo: Path, workload: str, models: Mapping[str, Path], threads: int, pm: Any) -> dict[str, str]:
    """Replace this workload's bench models in ``repo`` (other models stay); returns key -> served name."""
    from ..triton.repository import replace_model

    names = {}
    for key, path in models.items():
        names[key] = model_name(workload, key)
        replace_model(repo, names[key], path, threads=threads, pm=pm)
    return names


def serve_and_load_test(repo: Path, workload: str, models: Mapping[str, Path], candidates: list[str],
                        feeds: Mapping[str, np.ndarray], *, threads: int, batch: int, users: int, pairs: int,
                        duration_s: float, warmup_s: float, progress: bool, pm: Any = None, probe_reps: int = 5,
                        step: Callable[[str], None] = lambda _s: None) -> dict[str, Any]:
    """Serve ``models`` (keys: ``fp32`` plus ``candidates``) and load-test FP32 against each candidate.

    Right after every A/B pair, the candidate also runs in-process (same feeds, same threads, the server
    idle): its served throughput in that pair over this in-process throughput is the pair's efficiency.
    """
    from ..loadtest import run_ab
    from ..triton.server import TritonServer
    from .measure import InProcessProbe

    names = _write_repository(repo, workload, {k: models[k] for k in ("fp32", *candidates)}, threads, pm)
    ab: dict[str, Any] = {}
    paired: dict[str, list[dict[str, Any]]] = {}
    step("start Triton")
    with TritonServer(repo) as server:  # require_all: a model that fails to load raises with Triton's line
        url = server.grpc_url
        for key in candidates:
            step(f"load test fp32 vs {key}")
            probe = InProcessProbe(models[key], feeds, threads=threads, reps=probe_reps)
            paired[key] = []

            def after_pair(record: dict[str, Any], key: str = key, probe: InProcessProbe = probe) -> None:
                here = probe.measure()
                served_ips = record["candidate"]["throughput_ips"]
                paired[key].append({"pair": record["pair"], "served_ips": served_ips,
                                    "in_process_ips": here["throughput_ips"], "in_process_ms": here["median_ms"],
                                    "efficiency": served_ips / here["throughput_ips"]})

            ab[key] = run_ab(server.grpc_url, names["fp32"], names[key], pairs=pairs, users=users,
                             duration_s=duration_s, warmup_s=warmup_s, batch_size=batch, inputs=dict(feeds),
                             progress=progress, on_pair=after_pair)
    return {
        "models": names, "url": url, "threads": threads, "batch": batch, "users": users, "pairs": pairs,
        "duration_s": duration_s, "warmup_s": warmup_s, "ab": ab,
        "speedup_vs_fp32": {k: r["speedup_throughput"] for k, r in ab.items()},
        "throughput_ips": {"fp32": _median_baseline_ips(ab),
                           **{k: r["candidate"]["throughput_ips"] for k, r in ab.items()}},
        "failures": {k: r["failures"] for k, r in ab.items()},
        "efficiency_pairs": paired,
        "efficiency": {k: float(np.median([p["efficiency"] for p in v])) if v else None for k, v in paired.items()},
        "statistic": "speed-up: median of per-pair throughput ratios (A B alternated); throughput: all runs "
                     "of a model pooled, successful inferences per second (requests x batch); efficiency: "
                     "median over pairs of the candidate's served throughput in the pair / its in-process "
                     f"throughput measured right after the pair ({probe_reps} runs, median)",
    }


def _median_baseline_ips(ab: Mapping[str, Any]) -> float | None:
    """FP32 throughput: the median of its pooled throughput in each A/B (it is the baseline of each)."""
    values = [r["baseline"]["throughput_ips"] for r in ab.values()]
    return float(np.median(values)) if values else None
