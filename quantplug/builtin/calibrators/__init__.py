"""Built-in calibrators (a plugin registered through the same hooks as third-party packages)."""

from __future__ import annotations

from quantplug.hookspecs import hookimpl


@hookimpl
def register_calibrators(register):  # type: ignore[no-untyped-def]
    pass
