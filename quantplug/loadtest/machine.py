"""The machine a load test ran on: numbers mean little without it."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

__all__ = ["machine_info"]


def machine_info() -> dict[str, Any]:
    """CPU model and INT8 features, cores, memory, load, OS and the load generator's versions."""
    from ..cli.env import cpu_info, dist_version

    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu_model": cpu["model"],
        "logical_cores": os.cpu_count(),
        "int8_flags": cpu["int8_flags"],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {p: dist_version(p) for p in ("locust", "tritonclient", "grpcio", "gevent", "numpy")},
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil ships with locust
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info
