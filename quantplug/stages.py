"""The stages of the flow, and the one helper that tells the ``on_stage`` observers about each.

:data:`STAGES` is the list ``on_stage`` documents (hookspecs.py and docs/plugins.md are tested
against it); :func:`emit` refuses any other name, so the list cannot drift from what is emitted.
Calibration is part of the ``method`` stage (a method calibrates when it needs to).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["STAGES", "emit", "stage"]

STAGES: tuple[str, ...] = ("prepare", "method", "export", "evaluate", "repository", "serve", "verify",
                           "loadtest", "report")


def emit(pm: Any, name: str, seconds: float, info: dict[str, Any]) -> None:
    """Call ``on_stage`` for the finished stage ``name`` (one of :data:`STAGES`); ``pm`` None skips it."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)} (quantplug.stages.STAGES)")
    if pm is not None:
        pm.hook.on_stage(stage=name, seconds=seconds, info=dict(info))


@contextmanager
def stage(pm: Any, name: str, **info: Any) -> Iterator[dict[str, Any]]:
    """Time the ``with`` body as stage ``name`` and call ``on_stage`` when it ends successfully.

    ``pm`` is a plugin manager (or None to skip the hook). The yielded dict is the ``info`` passed to
    observers: the body may add plain values to it (an output path, a metric). After the stage the dict
    also holds ``seconds``.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)} (quantplug.stages.STAGES)")
    start = time.perf_counter()
    yield info
    seconds = time.perf_counter() - start
    info["seconds"] = seconds
    emit(pm, name, seconds, info)
