"""Exact per-request timings, written by locust processes and read by the orchestrator.

Locust rounds response times under 100 ms to whole milliseconds, so percentiles are computed from these
records instead: one CSV row per request (``start`` in epoch seconds, ``ms`` from ``perf_counter``,
``ok`` 1 or 0, ``error`` text for failures). The standalone or master locust process appends rows as they
arrive (workers ship theirs to the master in messages), and writes ``done.json`` atomically when the test
stops: its presence means the file is complete, even if the process then hangs at exit.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Record", "TimingsWriter", "Timings", "read_timings", "TIMINGS_FILE", "DONE_FILE"]

TIMINGS_FILE = "timings.csv"
DONE_FILE = "done.json"
_HEADER = ("start", "ms", "ok", "error")

Record = tuple[float, float, int, str]


class TimingsWriter:
    """Appends records to ``<folder>/timings.csv``; ``finish`` writes ``done.json`` atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / TIMINGS_FILE
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the whole test
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(_HEADER)
        self.count = 0
        self.failures = 0

    def write(self, records: Iterable[Record | list[Any]]) -> None:
        for start, ms, ok, error in records:
            self._csv.writerow((repr(float(start)), repr(float(ms)), int(ok), error or ""))
            self.count += 1
            self.failures += 0 if ok else 1
        self._file.flush()

    def finish(self, **info: Any) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        done = {"records": self.count, "failures": self.failures, **info}
        tmp = self.folder / f".{DONE_FILE}.tmp"
        tmp.write_text(json.dumps(done))
        os.replace(tmp, self.folder / DONE_FILE)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


@dataclass
class Timings:
    start: np.ndarray  # epoch seconds
    ms: np.ndarray
    ok: np.ndarray  # bool
    errors: dict[str, int]  # error text -> count
    done: dict[str, Any] | None  # done.json, None when the run did not finish writing

    def __len__(self) -> int:
        return int(self.ms.size)


def read_timings(folder: str | Path) -> Timings:
    folder = Path(folder)
    starts: list[float] = []
    ms: list[float] = []
    ok: list[bool] = []
    errors: dict[str, int] = {}
    path = folder / TIMINGS_FILE
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                if len(row) != 4:  # a row cut short by a killed process
                    continue
                try:
                    s, m, k = float(row[0]), float(row[1]), row[2] == "1"
                except ValueError:
                    continue
                starts.append(s)
                ms.append(m)
                ok.append(k)
                if not k:
                    errors[row[3]] = errors.get(row[3], 0) + 1
    done_path = folder / DONE_FILE
    done = json.loads(done_path.read_text()) if done_path.exists() else None
    return Timings(np.asarray(starts, dtype=np.float64), np.asarray(ms, dtype=np.float64),
                   np.asarray(ok, dtype=bool), errors, done)
