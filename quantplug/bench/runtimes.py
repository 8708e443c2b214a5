"""Other CPU runtimes beside ONNX Runtime: every backend plugin that can run a model in-process.

A backend offers this by having ``session(path, threads)`` (an object with ONNX Runtime's
``run(None, feeds)``), and optionally ``quantize_peer(fp32_onnx, out_dir, feeds) -> path`` (that
runtime's own INT8 tool, the peer) with ``peer_tool`` naming it; quantplug-openvino has both (OpenVINO,
NNCF's ``nncf.quantize``). The core never imports such a runtime: it calls the backend.

Per backend ``B`` and workload, one alternated in-process measurement at the request batch (A B C A B C,
same feeds, same threads) of: ONNX Runtime FP32 and quantplug INT8 (the references), ``B`` FP32 (the
FP32 ONNX), quantplug INT8 on ``B`` (the same QDQ file, unchanged: only when ``B``'s scheme is the one the
file was quantized in, i.e. exact there) and the peer on ``B`` (calibrated on the same batches as the
engine); then each model's score on the same held-out set, in its own runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bench_runtimes", "runtime_backends"]


def runtime_backends(registry: Any) -> dict[str, Any]:
    """Registered backends other than onnxruntime that can run a model in-process."""
    out = {}
    for name in registry.names("backends"):
        backend = registry.backend(name)
        if name != "onnxruntime" and callable(getattr(backend, "session", None)):
            out[name] = backend
    return out


def _same_scheme(a: Any, b: Any, isa: str | None) -> bool:
    def norm(s: Any) -> dict[str, Any]:
        s = s.for_cpu(isa) if callable(getattr(s, "for_cpu", None)) else s
        d = dict(s.to_dict())
        for key in ("name", "int4_weights"):  # neither changes an 8-bit QDQ file
            d.pop(key, None)
        return d

    return norm(a) == norm(b)


def _predict(open_session: Callable[[Any, int], Any], path: Path, inputs: dict[str, np.ndarray], names: list[str],
             threads: int, batch: int = 64) -> np.ndarray:
    sess = open_session(path, threads)
    n = len(inputs[names[0]])
    return np.concatenate([sess.run(None, {k: np.ascontiguousarray(inputs[k][s:s + batch]) for k in names})[0]
                           for s in range(0, n, batch)])


def _one(cfg: Any, workload: Any, registry: Any, name: str, backend: Any, built: Any, folder: Path) -> dict[str, Any]:
    from ..export.bench import bench_onnx, session
    from .measure import request_feeds
    from .models import _recipe, calibration_feeds

    primary = _recipe(cfg, "ptq", "max")
    try:
        from ..cpu import resolve_cpu

        isa: str | None = resolve_cpu(None)
    except ImportError:  # a core without CPU-aware schemes
        isa = None
    paths: dict[str, Path] = {"onnxruntime_fp32": built.paths["fp32"]}
    openers: dict[str, Callable[[Any, int], Any]] = {"onnxruntime_fp32": session}
    details: dict[str, Any] = {"onnxruntime_fp32": {"label": "ONNX Runtime FP32", "runtime": "onnxruntime"}}
    int8 = built.paths.get("int8")
    if int8 is not None:
        paths["onnxruntime_int8"], openers["onnxruntime_int8"] = int8, session
        details["onnxruntime_int8"] = {"label": "quantplug INT8 on ONNX Runtime", "runtime": "onnxruntime"}
    paths[f"{name}_fp32"], openers[f"{name}_fp32"] = built.paths["fp32"], backend.session
    details[f"{name}_fp32"] = {"label": f"{name} FP32", "runtime": name}
    exact = int8 is not None and _same_scheme(registry.backend(primary.target).scheme, backend.scheme, isa)
    if exact:
        paths[f"{name}_int8"], openers[f"{name}_int8"] = int8, backend.session
        details[f"{name}_int8"] = {"label": f"quantplug INT8 on {name}", "runtime": name,
                                   "note": f"the {primary.target} QDQ file unchanged: {name}'s scheme is the same"}
    peer = getattr(backend, "quantize_peer", None)
    if callable(peer):
        tool = getattr(backend, "peer_tool", "peer")
        feeds = calibration_feeds(workload, primary)
        started = time.perf_counter()
        try:
            path = Path(peer(built.paths["fp32"], folder / "peer", feeds))
        except Exception as e:  # the peer failing must not hide the other rows
            details[f"{name}_peer"] = {"label": f"{tool} INT8 on {name}", "error": f"{type(e).__name__}: {e}"}
        else:
            paths[f"{name}_peer"], openers[f"{name}_peer"] = path, backend.session
            details[f"{name}_peer"] = {
                "label": f"{tool} INT8 on {name}", "runtime": name, "tool": tool, "path": str(path),
                "quantize_seconds": round(time.perf_counter() - started, 3),
                "calibration": f"the same {len(feeds)} batches of {cfg.calib_batch_size} the engine used"}
    for key in ("onnxruntime_int8", f"{name}_int8"):
        if key in details and "quantize_seconds" not in details[key]:
            details[key]["quantize_seconds"] = (built.details.get("int8") or {}).get("quantize_seconds")
    result = bench_onnx(paths, request_feeds(workload, cfg.batch), threads=cfg.threads, rounds=cfg.rounds,
                        reps=cfg.reps, warmup=cfg.warmup, openers=openers)
    fp32_keys = [k for k in ("onnxruntime_fp32", f"{name}_fp32") if k in paths]
    fastest_fp32 = min(fp32_keys, key=lambda k: result.medians_ms[k])
    inputs, targets = workload.test_set()
    n = len(targets) if cfg.test_limit is None else min(cfg.test_limit, len(targets))
    sub = {k: np.asarray(v)[:n] for k, v in inputs.items()}
    names = list(workload.input_names)
    scores = {k: {m: float(v) for m, v in workload.score(_predict(openers[k], p, sub, names, cfg.threads),
                                                         np.asarray(targets)[:n]).items()}
              for k, p in paths.items()}
    peer_key = f"{name}_peer" if f"{name}_peer" in paths else None
    int8_keys = [k for k in paths if not k.endswith("_fp32")]
    return {
        "models": {k: {**d, "path": d.get("path", str(paths[k])) if k in paths else None}
                   for k, d in details.items()},
        "scheme_exact_here": exact, "cpu": isa,
        "in_process": {
            "batch": cfg.batch, "threads": cfg.threads, "rounds": cfg.rounds, "reps": cfg.reps,
            "medians_ms": result.medians_ms, "rounds_ms": result.rounds,
            "speedup_vs_onnxruntime_fp32": {k: result.ratio("onnxruntime_fp32", k) for k in paths},
            "fastest_fp32": fastest_fp32,
            "speedup_vs_fastest_fp32": {k: result.ratio(fastest_fp32, k) for k in paths},
            "speedup_vs_peer": ({k: result.ratio(peer_key, k) for k in int8_keys if k != peer_key}
                                if peer_key else {}),
            "fastest_int8": min(int8_keys, key=lambda k: result.medians_ms[k]) if int8_keys else None,
            "statistic": "median over alternated rounds; ratios are medians of per-round ratios",
        },
        "quality": {"metric": workload.metric, "test_size": int(n), "scores": scores,
                    "runtime": "each model in its own runtime"},
    }


def bench_runtimes(cfg: Any, workload: Any, registry: Any, built: Any, folder: Path,
                   step: Callable[[str], None] = lambda _s: None) -> dict[str, Any]:
    """``{backend name: measurements}`` for every in-process runtime backend (see the module doc)."""
    out: dict[str, Any] = {}
    for name, backend in runtime_backends(registry).items():
        step(f"runtime {name}: FP32, INT8, peer")
        try:
            out[name] = _one(cfg, workload, registry, name, backend, built, folder / name)
        except Exception as e:  # a plugin's runtime failing is recorded; the ONNX Runtime rows stand
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


