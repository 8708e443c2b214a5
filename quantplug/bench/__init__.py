"""Benchmarks (``quantplug bench`` / ``make bench``): FP32 vs quantplug INT8 vs ONNX Runtime's own quantizer,
in-process (ONNX Runtime, alternated) and served (embedded Triton, locust A/B), with quality, on
resnet18, resnet50 and minilm; one ``bench.json`` and a short ``bench.md`` with the targets marked.

    from quantplug.bench import BenchConfig, run_bench
    data = run_bench(BenchConfig(workloads=("resnet18",), output="bench-results"))
"""

from __future__ import annotations

from .config import AUTO, DEFAULT_WORKLOADS, BenchConfig, Variant, variants_for
from .report import format_markdown
from .run import SCHEMA, BenchError, bench_workload, run_bench
from .targets import evaluate_targets

__all__ = [
    "AUTO",
    "DEFAULT_WORKLOADS",
    "SCHEMA",
    "BenchConfig",
    "BenchError",
    "Variant",
    "bench_workload",
    "evaluate_targets",
    "format_markdown",
    "run_bench",
    "variants_for",
]
