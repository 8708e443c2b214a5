"""The plugin manager: hook specs, built-in plugins and third-party entry points.

``get_plugin_manager()`` builds a fresh manager each call and has no import-time side effects, so tests
and tools can make as many as they like. Built-ins register through the same hooks as third parties.

A plugin that fails to import, or implements a hook quantplug does not have (a misspelled
``register_calibrator``: pluggy's ``check_pending``), is an error naming the plugin and its package.
``get_plugin_manager(strict=False)`` records such plugins in ``pm.failures`` instead (for
``quantplug plugins``, which lists the healthy ones and marks the broken ones).

Environment:
    QUANTPLUG_LOAD_PLUGINS  unset: load every installed plugin of entry-point group ``quantplug``;
                            empty: load none; ``a,b``: load only the entry points named a and b
                            (entry-point names, as in ``[project.entry-points.quantplug] a = "module"``).
    QUANTPLUG_TRACE         ``1``: print every hook call to stderr (pluggy's hook-call monitoring).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginFailure", "PluginInfo", "QuantplugPluginManager",
           "check_hooks", "get_plugin_manager"]

ENTRY_POINT_GROUP = "quantplug"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "quantplug.builtin.methods",
    "quantplug.builtin.calibrators",
    "quantplug.builtin.backends",
    "quantplug.builtin.workloads",
)

_ESCAPE = ("Uninstall it, or skip it with QUANTPLUG_LOAD_PLUGINS=<the plugins you want> "
           "(QUANTPLUG_LOAD_PLUGINS='' loads none)")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None  # None for built-ins
    version: str | None
    builtin: bool


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not take part: its name, its package and the one-line reason."""

    name: str
    distribution: str | None
    version: str | None
    message: str


class QuantplugPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers which distribution each plugin came from, and (when built
    with ``strict=False``) which plugins failed."""

    def __init__(self, strict: bool = True) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.plugin_info: dict[str, PluginInfo] = {}
        self.strict = strict
        self.failures: list[PluginFailure] = []

    def fail(self, failure: PluginFailure, cause: BaseException | None = None) -> None:
        """Raise ``failure`` as a PluginError (strict) or record it in ``failures``."""
        if self.strict:
            raise PluginError(failure.message) from cause
        self.failures.append(failure)

    def origin(self, name: str) -> str:
        """``package version`` of plugin ``name`` for messages (``?`` when unknown)."""
        info = self.plugin_info.get(name)
        if info is None or info.distribution is None:
            return "package ?"
        return f"package {info.distribution} {info.version or ''}".rstrip()


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []) if not caller.has_spec()
                  and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()))


def _unknown_hook_message(pm: QuantplugPluginManager, plugin: object) -> str:
    name = pm.get_name(plugin) or repr(plugin)
    known = sorted(n for n in vars(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT_NAME}_spec"))
    parts = []
    for hook in _unknown_hooks(pm, plugin):
        close = difflib.get_close_matches(hook, known, n=1)
        parts.append(f'"{hook}"' + (f' (did you mean "{close[0]}"?)' if close else ""))
    return (f'quantplug plugin "{name}" from {pm.origin(name)} implements unknown hook {", ".join(parts)}; '
            f"rename it to one of {', '.join(known)} (docs/plugins.md). {_ESCAPE}")


def check_hooks(pm: QuantplugPluginManager) -> None:
    """Every hook implementation must match a hook spec (pluggy's ``check_pending``); a plugin with an
    unknown (e.g. misspelled) hook is a PluginError naming it, its package and the hook. Without
    ``strict`` the plugin is unregistered and recorded in ``pm.failures``."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as e:
            plugin = e.plugin
            name = pm.get_name(plugin) or repr(plugin)
            info = pm.plugin_info.get(name)
            failure = PluginFailure(name, info.distribution if info else None, info.version if info else None,
                                    _unknown_hook_message(pm, plugin))
            pm.fail(failure, e)
            pm.unregister(plugin)


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
            f"(installed: {', '.join(sorted(ep.name for ep in eps)) or 'none'}); fix the variable or pip install "
            "the plugin (the variable takes entry-point names, as `quantplug plugins` shows them)"
        )
    return [ep for ep in eps if ep.name in wanted]


def _load_entry_points(pm: QuantplugPluginManager) -> None:
    for ep in _selected_entry_points():
        dist: Any = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as e:
            message = (f'Error loading quantplug plugin "{ep.name}" from package {dist_name or "?"} '
                       f"{version or ''}: {type(e).__name__}: {e}. {_ESCAPE}")
            pm.fail(PluginFailure(ep.name, dist_name, version, message), e)
            continue
        pm.plugin_info[ep.name] = PluginInfo(ep.name, dist_name, version, builtin=False)


def get_plugin_manager(load_entrypoints: bool = True, *, strict: bool = True) -> QuantplugPluginManager:
    """A fresh plugin manager with the hook specs, the built-ins and (optionally) installed plugins.

    ``strict=False`` records broken plugins in ``pm.failures`` (and leaves them out) instead of raising.
    """
    pm = QuantplugPluginManager(strict=strict)
    pm.add_hookspecs(hookspecs)
    from . import __version__

    for modname in DEFAULT_PLUGINS:
        module = importlib.import_module(modname)
        pm.register(module, name=modname)
        pm.plugin_info[modname] = PluginInfo(modname, "quantplug", __version__, builtin=True)
    if load_entrypoints:
        _load_entry_points(pm)
    check_hooks(pm)
    if os.environ.get("QUANTPLUG_TRACE"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm
