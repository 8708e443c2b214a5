"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``), safely.

The ``preexec_fn`` of a multi-threaded process must not import modules or dlopen libraries between
fork and exec: a lock held by another thread at fork time never comes free in the child (a demo hung
that way in ``Popen``). :func:`resolve_prctl` looks libc's ``prctl`` up in the parent; call it before
``Popen``, then call :func:`die_with_parent` inside ``preexec_fn``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["die_with_parent", "resolve_prctl"]

_PRCTL: dict[str, Any] = {}
_PR_SET_PDEATHSIG = 1


def resolve_prctl() -> None:
    """Look up libc's prctl once, in the parent (a no-op off Linux)."""
    if "prctl" in _PRCTL or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        _PRCTL["prctl"] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        _PRCTL["prctl"] = None


def die_with_parent(sig: int) -> None:
    """In the child: receive ``sig`` when the parent dies (only what resolve_prctl found is called)."""
    prctl = _PRCTL.get("prctl")
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, sig)
