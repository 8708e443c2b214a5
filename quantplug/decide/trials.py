"""Trial records for ``tune``: what each configuration scored, which one is best, and the table.

Also the two guards that make "a crash or Ctrl-C never loses the best" true: saving is shielded from
SIGINT/the budget alarm (a signal arriving mid-save is delivered right after it), and the time budget
is an alarm that interrupts a running trial, not only a check between trials.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ..report.table import format_table

__all__ = ["BudgetExceeded", "Deadline", "Trial", "better", "format_trials", "shielded"]


@dataclass
class Trial:
    """One quantized configuration and its validation result."""

    index: int
    stage: str  # "ptq", "fallback", "qat", "qad", ... (a stage of the search ladder)
    config: str  # a short human description, e.g. "ptq/entropy int8" or "int4, 2 layers -> int8"
    recipe: dict[str, Any]
    score: float | None = None  # validation metric
    drop: float | None = None  # FP32 validation metric minus this one, in points
    size_bytes: int | None = None
    seconds: float = 0.0
    within_budget: bool = False
    latency_ms: float | None = None
    output_error: float | None = None  # relative MSE of the outputs to FP32's (breaks ties in the metric)
    note: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def better(a: Trial, b: Trial | None) -> bool:
    """Whether ``a`` beats ``b``: within budget beats not; then smaller (within) or more accurate."""
    if a.score is None or a.error:
        return False
    if b is None or b.score is None:
        return True
    if a.within_budget != b.within_budget:
        return a.within_budget
    if a.within_budget:
        sa, sb = a.size_bytes or math.inf, b.size_bytes or math.inf
        if sa != sb:
            return sa < sb
    if a.score != b.score:
        return a.score > b.score
    return (a.output_error or 0.0) < (b.output_error or 0.0)


def _size(v: Any) -> str:
    return f"{v / 1024:.1f} KiB"


def format_trials(trials: list[Trial], metric: str, winner: int | None = None) -> str:
    rows = []
    for t in trials:
        rows.append({
            "#": f"{t.index}{' *' if t.index == winner else ''}",
            "stage": t.stage,
            "config": t.config,
            metric: t.score,
            "drop": t.drop,
            "size": t.size_bytes,
            "latency": t.latency_ms,
            "err": t.output_error,
            "time": t.seconds,
            "ok": "yes" if t.within_budget else ("error" if t.error else "no"),
        })
    cols: list[tuple[str, str, Any]] = [
        ("#", "#", None), ("stage", "stage", None), ("configuration", "config", None),
        (f"val {metric}", metric, lambda v: f"{v:.2f}"), ("drop (pts)", "drop", lambda v: f"{v:+.2f}"),
        ("out err", "err", lambda v: f"{v:.1e}"),
        ("size", "size", _size), ("time (s)", "time", lambda v: f"{v:.1f}"), ("within", "ok", None),
    ]
    if any(t.latency_ms is not None for t in trials):
        cols.insert(7, ("latency (ms)", "latency", lambda v: f"{v:.2f}"))
    return format_table(rows, cols)


class BudgetExceeded(Exception):  # noqa: N818 - a control-flow signal, not an error the user fixes
    """The time budget ran out (raised inside the running trial by the alarm)."""


_state = threading.local()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Delay SIGINT and the budget alarm until the block ends (so a save is never cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def defer(signum: int, frame: Any) -> None:
        pending.append(signum)

    old_int = signal.signal(signal.SIGINT, defer)
    old_alrm = signal.signal(signal.SIGALRM, defer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGALRM, old_alrm)
        for signum in pending:
            handler = old_int if signum == signal.SIGINT else old_alrm
            if callable(handler):
                handler(signum, None)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt


@dataclass
class Deadline:
    """A wall-clock budget; as a context manager it also arms an alarm that interrupts a running trial."""

    seconds: float | None
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.monotonic() - self.started)

    @property
    def expired(self) -> bool:
        return self.remaining <= 0

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        usable = (self.seconds is not None and hasattr(signal, "setitimer")
                  and threading.current_thread() is threading.main_thread())
        if not usable:
            yield
            return
        if self.expired:
            raise BudgetExceeded

        def on_alarm(signum: int, frame: Any) -> None:
            raise BudgetExceeded

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.remaining, 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
