"""In-process measurements: ONNX Runtime latency (models alternated in every round) and quality.

Latency: :func:`quantplug.export.bench.bench_onnx` runs every model in turn in each round (A B C A B C
...), same feeds, same thread count; a ratio is the median of the per-round ratios, so every ratio
compares runs made moments apart under the same machine load. Throughput is ``batch / median latency``.

Quality: every model (FP32 included) runs in ONNX Runtime on the workload's held-out test set and is
scored with the workload's own ``score`` (``resnet*``: top-1 agreement with the FP32 PyTorch model;
``minilm``: cosine similarity to FP32 embeddings and top-10 neighbour agreement).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["InProcessProbe", "request_feeds", "in_process", "quality"]


def request_feeds(workload: Any, batch: int) -> dict[str, np.ndarray]:
    """``batch`` rows of the held-out test inputs (tiled if the test set is smaller): one request."""
    inputs, _ = workload.test_set()
    feeds = {}
    for name in workload.input_names:
        arr = np.asarray(inputs[name])
        reps = -(-batch // len(arr))
        feeds[name] = np.ascontiguousarray(np.concatenate([arr] * reps)[:batch])
    return feeds


def in_process(models: Mapping[str, Path], feeds: Mapping[str, np.ndarray], *, threads: int, rounds: int,
               reps: int, warmup: int, baseline: str = "fp32", peer: str | None = "peer") -> dict[str, Any]:
    """Latency of every model at the feeds' batch; ratios against ``baseline`` and (ours) against ``peer``."""
    from ..export.bench import bench_onnx

    batch = len(next(iter(feeds.values())))
    result = bench_onnx(models, feeds, threads=threads, rounds=rounds, reps=reps, warmup=warmup)
    speedup = {k: result.ratio(baseline, k) for k in models if k != baseline}
    vs_peer = {k: result.ratio(peer, k) for k in models if peer and peer in models and k not in (baseline, peer)}
    return {
        "batch": batch, "threads": threads, "rounds": rounds, "reps": reps, "warmup": warmup,
        "medians_ms": result.medians_ms, "rounds_ms": result.rounds,
        "throughput_ips": {k: batch * 1000.0 / v for k, v in result.medians_ms.items()},
        "speedup_vs_fp32": speedup,
        "speedup_vs_peer": vs_peer,
        "statistic": "latency: median over rounds of each round's median; speed-up: median of per-round ratios "
                     "(baseline ms / candidate ms)",
    }


class InProcessProbe:
    """In-process throughput of one model measured on demand (a session kept open between calls).

    Served efficiency compares a served run with an in-process measurement taken right after it, so both
    see the same machine load; measurements taken minutes apart on a shared machine are not comparable.
    """

    def __init__(self, path: Path, feeds: Mapping[str, np.ndarray], *, threads: int, reps: int = 5,
                 warmup: int = 2) -> None:
        from ..export.bench import session

        self.session = session(path, threads)
        self.feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        self.batch = len(next(iter(self.feeds.values())))
        self.reps, self.warmup = reps, warmup

    def measure(self) -> dict[str, float]:
        """``{"median_ms", "throughput_ips"}`` over ``reps`` timed runs after ``warmup`` untimed ones."""
        import statistics
        import time

        for _ in range(self.warmup):
            self.session.run(None, self.feeds)
        times = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            self.session.run(None, self.feeds)
            times.append((time.perf_counter() - t0) * 1000)
        ms = float(statistics.median(times))
        return {"median_ms": ms, "throughput_ips": self.batch * 1000.0 / ms}


def quality(workload: Any, models: Mapping[str, Path], *, threads: int, limit: int | None = None) -> dict[str, Any]:
    """The workload's score of every model under ONNX Runtime on the (first ``limit`` items of the) test set."""
    from ..pipeline import predict_onnx

    inputs, targets = workload.test_set()
    n = len(targets) if limit is None else min(limit, len(targets))
    sub = {k: np.ascontiguousarray(np.asarray(v)[:n]) for k, v in inputs.items()}
    tgt = np.asarray(targets)[:n]
    scores = {key: {k: float(v) for k, v in workload.score(predict_onnx(path, sub, batch=64, threads=threads),
                                                           tgt).items()}
              for key, path in models.items()}
    return {"metric": workload.metric, "test_size": int(n), "runtime": "onnxruntime", "scores": scores}
