"""Stopping a load test on SIGINT or SIGTERM: every locust process ended, temp folders gone, partial result kept.

The command line wraps a run in :func:`stop_on_signals`: the first SIGINT or SIGTERM raises
:class:`Interrupted` (a ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` on
the way swallows it) in the main thread; the runner's ``finally`` blocks kill the locust process
groups and remove the temporary folders, and :func:`quantplug.loadtest.run_ab` turns it into
:class:`LoadTestInterrupted` carrying the pairs finished so far. Further signals are ignored while
that cleanup runs (it is bounded: SIGKILL and short waits). The handlers are installed even where the
signal was inherited as ignored (a shell's background job ignores SIGINT): Ctrl-C must stop the run.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ..errors import LoadTestError

__all__ = ["Interrupted", "LoadTestInterrupted", "stop_on_signals"]


class Interrupted(BaseException):
    """Raised in the main thread by the first SIGINT/SIGTERM inside :func:`stop_on_signals`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class LoadTestInterrupted(LoadTestError):
    """A run stopped by a signal; ``result`` holds what was finished (or None), exit code 128 + signal."""

    def __init__(self, message: str, signum: int, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.result = result
        self.exit_code = 128 + signum


def signal_of(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)


@contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Turn the first of ``signals`` into :class:`Interrupted`; later ones are ignored until the block ends."""
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return  # cleanup is under way
        fired.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
