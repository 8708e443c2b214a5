"""Load tests: locust over gRPC against Triton, exact percentiles, A/B pairs and the speed-up gate.

``import quantplug.loadtest`` stays light: locust, gevent and tritonclient load only when a run starts
(locust itself runs in subprocesses; :mod:`quantplug.loadtest.grpc_user` is imported only there).
"""

from __future__ import annotations

from .api import GateFailedError, LoadTestInterrupted, check_gate, run_ab, run_load
from .report import format_pair, format_summary, write_html, write_json, write_png
from .stats import RunStats

__all__ = [
    "GateFailedError",
    "LoadTestInterrupted",
    "RunStats",
    "check_gate",
    "format_pair",
    "format_summary",
    "run_ab",
    "run_load",
    "write_html",
    "write_json",
    "write_png",
]
