"""The main job, end to end on the embedded default: ``quantplug demo`` / ``make demo``."""

from __future__ import annotations

from .run import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
