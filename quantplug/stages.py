"""Timing a pipeline stage and telling the ``on_stage`` observers about it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["stage"]


@contextmanager
def stage(pm: Any, name: str, **info: Any) -> Iterator[dict[str, Any]]:
    """Time the ``with`` body as stage ``name`` and call ``on_stage`` when it ends successfully.

    ``pm`` is a plugin manager (or None to skip the hook). The yielded dict is the ``info`` passed to
    observers: the body may add plain values to it (an output path, a metric). After the stage the dict
    also holds ``seconds``.
    """
    start = time.perf_counter()
    yield info
    seconds = time.perf_counter() - start
    info["seconds"] = seconds
    if pm is not None:
        pm.hook.on_stage(stage=name, seconds=seconds, info=dict(info))
