"""The plugin manager: hook specs, built-in plugins and third-party entry points.

``get_plugin_manager()`` builds a fresh manager each call and has no import-time side effects, so tests
and tools can make as many as they like. Built-ins register through the same hooks as third parties.

Environment:
    QUANTPLUG_LOAD_PLUGINS  unset: load every installed plugin of entry-point group ``quantplug``;
                            empty: load none; ``a,b``: load only the entry points named a and b.
    QUANTPLUG_TRACE         ``1``: print every hook call to stderr (pluggy's hook-call monitoring).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata

import pluggy

from . import hookspecs
from .errors import PluginError

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginInfo", "QuantplugPluginManager", "get_plugin_manager"]

ENTRY_POINT_GROUP = "quantplug"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "quantplug.builtin.methods",
    "quantplug.builtin.calibrators",
    "quantplug.builtin.backends",
    "quantplug.builtin.workloads",
)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None  # None for built-ins
    version: str | None
    builtin: bool


class QuantplugPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers which distribution each external plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.plugin_info: dict[str, PluginInfo] = {}


def _selected_entry_points() -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    choice = os.environ.get("QUANTPLUG_LOAD_PLUGINS")
    if choice is None:
        return eps
    wanted = {c.strip() for c in choice.split(",") if c.strip()}
    unknown = wanted - {ep.name for ep in eps}
    if unknown:
        raise PluginError(
            f"QUANTPLUG_LOAD_PLUGINS names {', '.join(sorted(unknown))}, which no installed package provides "
            f"(installed: {', '.join(sorted(ep.name for ep in eps)) or 'none'}); fix the variable or pip install the plugin"
        )
    return [ep for ep in eps if ep.name in wanted]


def _load_entry_points(pm: QuantplugPluginManager) -> None:
    for ep in _selected_entry_points():
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as e:
            raise PluginError(
                f'Error loading quantplug plugin "{ep.name}" from package {dist_name or "?"} '
                f"{version or ''}: {type(e).__name__}: {e}. "
                f"Uninstall it, or skip it with QUANTPLUG_LOAD_PLUGINS=<the plugins you want> "
                f"(QUANTPLUG_LOAD_PLUGINS='' loads none)"
            ) from e
        pm.plugin_info[ep.name] = PluginInfo(ep.name, dist_name, version, builtin=False)


def get_plugin_manager(load_entrypoints: bool = True) -> QuantplugPluginManager:
    """A fresh plugin manager with the hook specs, the built-ins and (optionally) installed plugins."""
    pm = QuantplugPluginManager()
    pm.add_hookspecs(hookspecs)
    from . import __version__

    for modname in DEFAULT_PLUGINS:
        module = importlib.import_module(modname)
        pm.register(module, name=modname)
        pm.plugin_info[modname] = PluginInfo(modname, "quantplug", __version__, builtin=True)
    if load_entrypoints:
        _load_entry_points(pm)
    if os.environ.get("QUANTPLUG_TRACE"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm
