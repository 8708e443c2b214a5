"""In-process ONNX Runtime benchmarks: alternate models A B A B and report medians and ratios.

Also builds the peer baseline: ONNX Runtime's own ``quantize_static`` (QDQ, UINT8 activations, INT8
per-channel weights) of the same FP32 ONNX, so quantplug's export can be compared with it on equal terms.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BenchResult", "bench_onnx", "ort_quantize_static", "optimized_op_counts", "session"]


def session(path: str | os.PathLike[str], threads: int = 2, optimized_path: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@dataclass
class BenchResult:
    medians_ms: dict[str, float]
    rounds: dict[str, list[float]] = field(default_factory=dict)
    threads: int = 2

    def ratio(self, baseline: str, candidate: str) -> float:
        """How many times faster ``candidate`` is than ``baseline`` (median of per-round ratios)."""
        pairs = [b / c for b, c in zip(self.rounds[baseline], self.rounds[candidate], strict=True)]
        return float(statistics.median(pairs))

    def to_dict(self) -> dict[str, Any]:
        return {"medians_ms": self.medians_ms, "rounds_ms": self.rounds, "threads": self.threads}


def bench_onnx(models: Mapping[str, str | os.PathLike[str]], feeds: Mapping[str, np.ndarray], *, threads: int = 2,
               rounds: int = 7, reps: int = 5, warmup: int = 3,
               openers: Mapping[str, Callable[[Any, int], Any]] | None = None) -> BenchResult:
    """Median latency (ms) of each model on ``feeds``; rounds alternate the models (A B A B ...).

    ``openers`` maps a model key to another runtime's ``open(path, threads)`` returning an object with
    ONNX Runtime's ``run(None, feeds)`` (a backend plugin's ``session``); other keys run in ONNX Runtime."""
    sessions = {name: (openers or {}).get(name, session)(p, threads) for name, p in models.items()}
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, dict(feeds))
    per_round: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                s.run(None, dict(feeds))
                times.append((time.perf_counter() - t0) * 1000)
            per_round[name].append(statistics.median(times))
    return BenchResult({n: float(statistics.median(v)) for n, v in per_round.items()}, per_round, threads)


def ort_quantize_static(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                        batches: Iterable[Mapping[str, np.ndarray]], calibrate_method: str = "MinMax") -> Path:
    """ONNX Runtime's own static QDQ quantization (QUInt8 activations, QInt8 per-channel weights)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(list(batches))

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._it, None)
            return dict(item) if item is not None else None

    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        try:
            quant_pre_process(str(fp32_path), pre, skip_symbolic_shape=True)
        except Exception:
            pre = str(fp32_path)
        quantize_static(pre, str(out_path), _Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=getattr(CalibrationMethod, calibrate_method))
    return Path(out_path)


def optimized_op_counts(path: str | os.PathLike[str], threads: int = 1) -> dict[str, int]:
    """Op types (with counts) in ONNX Runtime's optimized graph of ``path``: shows what became integer."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        session(path, threads, optimized_path=out)
        counts: dict[str, int] = {}
        for node in onnx.load(out).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
