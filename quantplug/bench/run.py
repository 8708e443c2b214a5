"""``quantplug bench``: per workload, build FP32 / INT8 / peer, measure in-process, served and quality.

Writes ``<output>/bench.json`` (every number, the settings, the machine, timestamps; rewritten atomically
after each workload, so an interrupted run keeps what it measured) and ``<output>/bench.md``. Models go
to ``<output>/models/<workload>/<variant>/`` and the served repository to ``<output>/model_repository/``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from datetime import datetime, timezone
from typing import Any

from ..errors import QuantplugError
from ..report import write_json_atomic, write_text_atomic
from .config import BenchConfig, variants_for
from .report import format_markdown
from .targets import evaluate_targets

__all__ = ["BenchError", "SCHEMA", "bench_workload", "run_bench"]

SCHEMA = "quantplug-bench/1"


class BenchError(QuantplugError):
    """A workload of the benchmark could not be measured (its error is recorded in bench.json)."""

    exit_code = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Steps:
    """A progress bar over a workload's steps (stderr), with each step's wall time recorded."""

    def __init__(self, name: str, total: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"bench {name}", unit="step", disable=not progress, leave=True)
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._t = time.perf_counter()

    def __call__(self, label: str) -> None:
        self._close_current()
        self._current = label
        self.bar.set_postfix_str(label)

    def _close_current(self) -> None:
        now = time.perf_counter()
        if self._current is not None:
            self.seconds[self._current] = round(now - self._t, 3)
            self.bar.update(1)
        self._t = now

    def close(self) -> None:
        self._close_current()
        self._current = None
        self.bar.close()


def bench_workload(cfg: BenchConfig, name: str, registry: Any, pm: Any) -> dict[str, Any]:
    """Every measurement of one workload (a JSON-ready dict)."""
    from .measure import in_process, quality, request_feeds
    from .models import build_models
    from .served import serve_and_load_test

    workload = registry.workload(name)
    variants = variants_for(name, cfg.calibrator, other_scheme=not cfg.quick)
    batches = [cfg.batch] + ([1] if cfg.batch != 1 else [])
    from .runtimes import bench_runtimes, runtime_backends

    total = 1 + len(variants) + 1 + len(batches) + 1 + 1 + len(variants) + cfg.serve_peer
    total -= sum(v.key.endswith("_scheme") for v in variants)
    total += len(runtime_backends(registry))
    load_start = _loadavg()
    steps = _Steps(name, total, cfg.progress)
    try:
        built = build_models(cfg, workload, variants, registry, cfg.output / "models" / name, step=steps)
        models = built.paths
        # The other-CPU-scheme variant is measured in-process only (its cost is a kernel question).
        candidates = [k for k in models if k != "fp32" and (k != "peer" or cfg.serve_peer)
                      and not k.endswith("_scheme")]
        in_proc: dict[str, Any] = {}
        for b in batches:
            steps(f"in-process batch {b}")
            in_proc[f"batch_{b}"] = in_process(models, request_feeds(workload, b), threads=cfg.threads,
                                               rounds=cfg.rounds, reps=cfg.reps, warmup=cfg.warmup)
        steps("quality")
        qual = quality(workload, models, threads=cfg.threads, limit=cfg.test_limit)
        runtimes = bench_runtimes(cfg, workload, registry, built, cfg.output / "models" / name, step=steps)
        served = serve_and_load_test(cfg.output / "model_repository", name, models, candidates,
                                     request_feeds(workload, cfg.batch), threads=cfg.threads, batch=cfg.batch,
                                     users=cfg.users, pairs=cfg.pairs, duration_s=cfg.duration_s,
                                     warmup_s=cfg.warmup_s, progress=cfg.progress, pm=pm, probe_reps=cfg.reps,
                                     step=steps)
    finally:
        steps.close()
    here = in_proc[f"batch_{cfg.batch}"]["throughput_ips"]
    unpaired = {k: (v / here[k] if v is not None and here.get(k) else None)
                for k, v in served["throughput_ips"].items()}
    return {
        "description": getattr(workload, "description", ""),
        "metric": getattr(workload, "metric", None),
        "variants": [v.to_dict() for v in variants],
        "models": built.details,
        "calibrator_selection": built.calibrator_selection,
        "in_process": in_proc,
        "served": served,
        "efficiency": served["efficiency"],
        "efficiency_rule": (f"median over A/B pairs of served throughput (inferences/s) / in-process throughput "
                            f"({cfg.batch} / median latency) measured right after the pair, batch {cfg.batch}, "
                            f"{cfg.threads} ONNX Runtime threads in both"),
        "efficiency_unpaired": unpaired,
        "efficiency_unpaired_rule": ("pooled served throughput / the in-process measurement above (taken minutes "
                                     "earlier, under another machine load: for reference only)"),
        "quality": qual,
        "runtimes": runtimes,  # other in-process runtimes (backend plugins), see quantplug.bench.runtimes
        "loadavg": {"start": load_start, "end": _loadavg()},
        "step_seconds": steps.seconds,
    }


def _preflight(cfg: BenchConfig, registry: Any) -> None:
    """Fail before any long work: unknown workloads, no tritonserver binary, no locust."""
    from ..loadtest.runner import check_locust
    from ..triton.server import find_binary

    for name in cfg.workloads:
        registry.workload(name)
    binary = find_binary()
    if not binary.is_file():
        from ..errors import ServerError

        raise ServerError(f"the tritonserver binary is missing at {binary}; pip install nvidia-pytriton==0.7.0")
    check_locust()


def run_bench(cfg: BenchConfig, *, pm: Any = None) -> dict[str, Any]:
    """Run the benchmark; returns what ``bench.json`` holds. Raises :class:`BenchError` after writing the
    results when a workload failed (the others are still measured and written)."""
    from ..loadtest.machine import machine_info
    from ..plugins import get_plugin_manager
    from ..registry import build_registry

    pm = pm or get_plugin_manager()
    registry = build_registry(pm)
    _preflight(cfg, registry)
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data: dict[str, Any] = {
        "schema": SCHEMA, "status": "running", "started_at": _now(), "finished_at": None, "wall_s": None,
        "settings": cfg.to_dict(), "machine": machine_info(), "workloads": {}, "targets": [],
        "notes": ["Absolute times come from a shared machine; compare ratios (alternated runs), not times.",
                  "Quality is measured in ONNX Runtime on each workload's held-out test set; resnet18/50 are "
                  "random-init (no ImageNet here): accuracy is top-1 agreement with the FP32 model."],
    }
    failed: list[str] = []
    for name in cfg.workloads:
        _say(f"[bench] {name} (load average {_loadavg()})")
        try:
            data["workloads"][name] = bench_workload(cfg, name, registry, pm)
        except QuantplugError as e:
            data["workloads"][name] = {"error": str(e)}
            failed.append(name)
            _say(f"[bench] {name} failed: {e}")
        except Exception as e:  # a bug: keep its traceback, measure the other workloads
            data["workloads"][name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
            traceback.print_exc()
        write_json_atomic(out / "bench.json", data)
    data["machine"]["loadavg_at_end"] = _loadavg()
    data["targets"] = evaluate_targets({k: v for k, v in data["workloads"].items() if "error" not in v}, cfg.batch)
    data["status"] = "failed: " + ", ".join(failed) if failed else "complete"
    data["finished_at"] = _now()
    data["wall_s"] = round(time.time() - started, 1)
    write_json_atomic(out / "bench.json", data)
    write_text_atomic(out / "bench.md", format_markdown(data))
    if failed:
        raise BenchError(f"benchmark of {', '.join(failed)} failed (see {out / 'bench.json'}: "
                         f"{'; '.join(data['workloads'][n]['error'] for n in failed)})")
    return data

