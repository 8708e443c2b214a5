"""Exact timing collection inside locust processes (imported by :mod:`quantplug.loadtest.grpc_user`).

Every ``events.request`` (from any user class) is recorded with its exact time. A standalone process
writes its records to ``--timings-dir``; a worker ships its records to the master in its periodic stats
reports and, when it stops, in a final message; the master writes them. ``done.json`` marks the file
complete and says how many workers delivered their final records.

Distributed headless runs should use ``--timed-run SECONDS`` on the master instead of ``-t``: with
``-t`` locust stops the master before its workers, so the workers' last records arrive after the test
has stopped (they are still written when the master quits, and ``done.json`` is rewritten). With
``--timed-run`` the master asks every worker to stop, waits for all final records, then quits; its
clock starts when the test starts (``quantplug loadtest`` uses it for standalone runs too).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from quantplug.loadtest.stats import exact_percentiles
from quantplug.loadtest.timings import DONE_FILE, TIMINGS_FILE, Record, TimingsWriter

__all__ = ["option"]

log = logging.getLogger("quantplug.loadtest")
_RECORDS = "quantplug_timings"  # worker -> master: {"records": [...], "final": bool}
_STOP = "quantplug_stop"  # master -> worker: stop your users and send your final records
_FLUSH_EVERY = 256
_FINAL_WAIT_S = 15.0


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_: Any) -> None:
    parser.add_argument("--timings-dir", type=str, env_var="QUANTPLUG_LOADTEST_TIMINGS_DIR", default="",
                        help="folder for exact per-request timings (timings.csv; done.json when complete)")
    parser.add_argument("--timed-run", type=float, env_var="QUANTPLUG_LOADTEST_TIMED_RUN", default=0.0,
                        help="stop after this many seconds, collecting every worker's final timings, then quit "
                             "(use instead of -t for distributed headless runs)")


def option(environment: Any, name: str, default: Any) -> Any:
    options = environment.parsed_options
    value = getattr(options, name, None) if options is not None else None
    return default if value in (None, "") else value


class _Collector:
    def __init__(self) -> None:
        self.buffer: list[Record] = []
        self.writer: TimingsWriter | None = None
        self.ok_ms: list[float] = []
        self.total = self.failures = 0
        self.started = 0.0
        self.final_workers: set[str] = set()
        self.expected_workers = 0

    def reset(self, folder: str, expected_workers: int) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.buffer, self.ok_ms, self.total, self.failures = [], [], 0, 0
        self.final_workers = set()
        self.expected_workers = expected_workers
        self.started = time.time()
        if folder:
            for name in (TIMINGS_FILE, DONE_FILE):
                (Path(folder) / name).unlink(missing_ok=True)
            self.writer = TimingsWriter(folder)

    def add(self, records: list[Any]) -> None:
        for _start, ms, ok, _error in records:
            self.total += 1
            if ok:
                self.ok_ms.append(float(ms))
            else:
                self.failures += 1
        if self.writer is not None and records:
            self.writer.write(records)

    def flush(self) -> None:
        records, self.buffer = self.buffer, []
        self.add(records)

    def take(self) -> list[Record]:
        records, self.buffer = self.buffer, []
        return records

    def finish(self) -> None:
        self.flush()
        p50, p95, p99 = exact_percentiles(np.asarray(self.ok_ms))
        log.info("exact timings: %d requests, %d failures, p50 %.3f ms, p95 %.3f ms, p99 %.3f ms",
                 self.total, self.failures, p50, p95, p99)
        if self.writer is not None:
            self.writer.finish(started=self.started, stopped=time.time(), workers=self.expected_workers,
                               workers_final=len(self.final_workers))


_collector = _Collector()


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    # gevent timers count from the event loop's cached clock, which is stale by however long the
    # imports before this point took (seconds on a busy machine): locust's -t timer, created next,
    # then fires early (seen: a 2 s run stopped after 0.4 s). Refresh the clock first.
    gevent.get_hub().loop.update_now()
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(_RECORDS, _on_records_message)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(_STOP, _on_stop_message, concurrent=True)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    expected = runner.worker_count if isinstance(runner, MasterRunner) else 0  # workers connected now
    _collector.reset(str(option(environment, "timings_dir", "")), expected)
    seconds = float(option(environment, "timed_run", 0.0))
    if seconds > 0:
        gevent.spawn_later(seconds, _timed_stop, environment)


@events.request.add_listener
def _on_request(response_time: float, exception: BaseException | None = None, start_time: float | None = None,
                **_: Any) -> None:
    start = start_time if start_time is not None else time.time() - response_time / 1000.0
    error = "" if exception is None else " ".join(f"{type(exception).__name__}: {exception}".split())[:300]
    _collector.buffer.append((start, float(response_time), int(exception is None), error))
    if len(_collector.buffer) >= _FLUSH_EVERY and _collector.writer is not None:
        _collector.flush()


@events.report_to_master.add_listener
def _on_report_to_master(data: dict[str, Any], **_: Any) -> None:
    data[_RECORDS] = _collector.take()


@events.worker_report.add_listener
def _on_worker_report(data: dict[str, Any], **_: Any) -> None:
    _collector.add(data.get(_RECORDS, []))


def _on_records_message(environment: Any, msg: Any, **_: Any) -> None:
    _collector.add(msg.data.get("records", []))
    if msg.data.get("final"):
        _collector.final_workers.add(msg.node_id)


def _on_stop_message(environment: Any, msg: Any, **_: Any) -> None:
    environment.runner.stop()  # fires test_stop here, which sends the final records


def _timed_stop(environment: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        for client in list(runner.clients.all):
            runner.send_message(_STOP, client_id=client.id)
        deadline = time.monotonic() + _FINAL_WAIT_S
        while len(_collector.final_workers) < _collector.expected_workers and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if len(_collector.final_workers) < _collector.expected_workers:
            log.warning("only %d of %d workers sent their final timings", len(_collector.final_workers),
                        _collector.expected_workers)
    runner.quit()  # test_stop (or quitting, when the master already counts as stopped) writes done.json


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(_RECORDS, {"records": _collector.take(), "final": True})
        return
    _collector.finish()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    if _collector.writer is not None:
        _collector.finish()  # again: records that arrived after test_stop (locust's -t stops the master first)
        _collector.writer.close()
        _collector.writer = None
