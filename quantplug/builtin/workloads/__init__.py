"""Built-in workloads (a plugin registered through the same hooks as third-party packages)."""

from __future__ import annotations

from quantplug.hookspecs import hookimpl


@hookimpl
def register_workloads(register):  # type: ignore[no-untyped-def]
    pass
