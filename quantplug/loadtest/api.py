"""The load-test API: one run against one model, and the A/B comparison with its speed-up gate.

    stats = run_load("127.0.0.1:8001", "resnet18_int8", users=2, duration_s=20, batch_size=8)
    result = run_ab("127.0.0.1:8001", "resnet18_fp32", "resnet18_int8", pairs=3, batch_size=8,
                    min_speedup=2.0)
    ok, reason = check_gate(result, 2.0)

Each run is a headless locust subprocess (standalone, or a master plus ``workers`` processes) bounded
in time; statistics come from the exact per-request timings, never from locust's stdout.
"""

from __future__ import annotations

import math
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, LoadTestError
from ..workdirs import clean_stale, make_workdir
from .inputs import make_arrays, parse_input_shape
from .interrupt import Interrupted, LoadTestInterrupted, signal_of
from .machine import machine_info
from .preflight import describe_model, request_specs, server_version, warm_up
from .runner import check_locust, run_locust
from .stats import RunStats, compute_stats, median_or_none, pool_stats, ratio
from .timings import Timings, read_timings

__all__ = ["run_load", "run_ab", "check_gate", "GateFailedError", "LoadTestInterrupted"]


_WORKDIR_PREFIX = "quantplug-loadtest-"


class GateFailedError(LoadTestError):
    """The A/B result missed ``--min-speedup`` or had failures (exit code 1: a result, not a usage error)."""

    exit_code = 1


def _check_numbers(users: int, spawn_rate: float | None, duration_s: float, batch_size: int, workers: int,
                   warmup_s: float, pairs: int = 1) -> float:
    def bad(what: str, value: Any, rule: str) -> ConfigError:
        return ConfigError(f"bad {what} {value!r}: {rule}")

    if not isinstance(users, int) or users < 1:
        raise bad("users", users, "use an integer >= 1")
    rate = float(users if spawn_rate is None else spawn_rate)
    if not math.isfinite(rate) or rate <= 0:
        raise bad("spawn rate", spawn_rate, "use a number > 0 (users started per second)")
    if not math.isfinite(duration_s) or duration_s < 1:
        raise bad("duration", duration_s, "use at least 1 second")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise bad("batch size", batch_size, "use an integer >= 1")
    if not isinstance(workers, int) or workers < 0:
        raise bad("workers", workers, "use 0 (one locust process) or more worker processes")
    if workers > 0 and users < workers:
        raise bad("users", users, f"use at least one user per worker ({workers} workers)")
    if not math.isfinite(warmup_s) or warmup_s < 0 or warmup_s >= duration_s:
        raise bad("warm-up", warmup_s, f"use 0 <= warm-up < duration ({duration_s} s)")
    if not isinstance(pairs, int) or pairs < 1:
        raise bad("pairs", pairs, "use an integer >= 1")
    return rate


class _Prepared:
    """A model checked on the server, with its request shapes, warmed up."""

    def __init__(self, url: str, model: str, batch_size: int, input_shape: str | None,
                 inputs: str | Path | Mapping[str, np.ndarray] | None, workdir: Path) -> None:
        self.model = model
        info = describe_model(url, model)
        self.specs = request_specs(info, batch_size, parse_input_shape(input_shape))
        real = None
        self.inputs_npz = ""
        if inputs is not None:
            from .inputs import load_npz

            real = load_npz(inputs) if isinstance(inputs, (str, Path)) else {k: np.asarray(v) for k, v in inputs.items()}
            path = workdir / f"inputs-{model}.npz"
            np.savez(path, **real)
            self.inputs_npz = str(path)
        arrays = make_arrays(self.specs, np.random.default_rng(0), real)
        self.warmup_error = warm_up(url, model, arrays, self.specs)

    def settings(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.specs], "warmup_error": self.warmup_error}


def _one_run(url: str, prepared: _Prepared, folder: Path, *, users: int, spawn_rate: float, duration_s: float,
             batch_size: int, workers: int, warmup_s: float, input_shape: str | None,
             grpc_timeout_s: float) -> tuple[Timings, RunStats]:
    run = run_locust(folder, url, prepared.model, users=users, spawn_rate=spawn_rate, duration_s=duration_s,
                     batch_size=batch_size, workers=workers, input_shape=input_shape or "",
                     inputs_npz=prepared.inputs_npz, grpc_timeout_s=grpc_timeout_s)
    timings = read_timings(folder)
    last_line = next((ln for ln in reversed(run.log_tail.splitlines()) if ln.strip()), "no output")
    if timings.done is None:
        if run.killed:
            raise LoadTestError(f"locust run of {prepared.model!r} did not finish within its bound "
                                f"({run.wall_s:.0f} s); its process group was killed. Last log line: {last_line}")
        raise LoadTestError(f"locust run of {prepared.model!r} exited (codes {run.returncodes}) before finishing: "
                            f"{last_line}")
    stats = compute_stats(timings, prepared.model, batch_size=batch_size, users=users, workers=workers,
                          warmup_s=warmup_s)
    stats.notes.extend(run.notes)
    final, expected = timings.done.get("workers_final", 0), timings.done.get("workers", 0)
    if final < expected:
        stats.notes.append(f"only {final} of {expected} locust workers delivered their final timings; "
                           f"their last requests are missing from the statistics")
    return timings, stats


def run_load(url: str, model: str, *, users: int = 2, spawn_rate: float | None = None, duration_s: float = 10.0,
             batch_size: int = 1, workers: int = 0, warmup_s: float = 0.0, input_shape: str | None = None,
             inputs: str | Path | Mapping[str, np.ndarray] | None = None, grpc_timeout_s: float = 60.0,
             folder: str | Path | None = None) -> RunStats:
    """One bounded headless locust run against ``model`` on the Triton gRPC endpoint ``url``.

    ``spawn_rate`` defaults to ``users`` (all users in the first second); ``warmup_s`` drops requests
    started in the first seconds; ``inputs`` (an .npz path or arrays keyed by input name) replaces random
    inputs; ``folder`` keeps the timings and locust logs (a temporary folder is removed otherwise).
    """
    rate = _check_numbers(users, spawn_rate, duration_s, batch_size, workers, warmup_s)
    check_locust()
    try:
        with _workdir(folder) as work:
            prepared = _Prepared(url, model, batch_size, input_shape, inputs, work)
            return _one_run(url, prepared, work / "run-1", users=users, spawn_rate=rate, duration_s=duration_s,
                            batch_size=batch_size, workers=workers, warmup_s=warmup_s, input_shape=input_shape,
                            grpc_timeout_s=grpc_timeout_s)[1]
    except (Interrupted, KeyboardInterrupt) as e:
        signum = signal_of(e)
        raise LoadTestInterrupted(f"interrupted by {signal.Signals(signum).name}; every locust process was ended",
                                  signum) from None


def run_ab(url: str, baseline: str, candidate: str, *, pairs: int = 3, users: int = 2,
           spawn_rate: float | None = None, duration_s: float = 10.0, batch_size: int = 1, workers: int = 0,
           warmup_s: float = 0.0, input_shape: str | None = None,
           inputs: str | Path | Mapping[str, np.ndarray] | None = None, grpc_timeout_s: float = 60.0,
           min_speedup: float | None = None, folder: str | Path | None = None, progress: bool = True,
           on_pair: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Baseline and candidate alternated (A B, A B, ...), ``pairs`` times; the JSON-ready result.

    Per pair: both runs' statistics and the ratios ``speedup_throughput`` (candidate over baseline
    throughput) and ``speedup_p50`` (baseline p50 over candidate p50). The summary speed-ups are the
    medians of the per-pair ratios (runs share a noisy machine; a pair is measured under similar load);
    ``baseline``/``candidate`` pool all their runs (percentiles over every exact time).
    ``on_pair`` is called with each pair's record as soon as it is measured.

    SIGINT (``KeyboardInterrupt``) or :class:`~quantplug.loadtest.interrupt.Interrupted` (SIGTERM too,
    under :func:`~quantplug.loadtest.interrupt.stop_on_signals`) ends the locust processes and raises
    :class:`LoadTestInterrupted` whose ``result`` holds the pairs finished so far (``"interrupted": true``).
    """
    rate = _check_numbers(users, spawn_rate, duration_s, batch_size, workers, warmup_s, pairs)
    check_locust()
    if min_speedup is not None and (not math.isfinite(min_speedup) or min_speedup <= 0):
        raise ConfigError(f"bad min speed-up {min_speedup!r}: use a number > 0, e.g. 2.0")
    machine = machine_info()
    started = time.time()
    models: dict[str, _Prepared] = {}
    runs: dict[str, list[tuple[Timings, RunStats]]] = {"baseline": [], "candidate": []}
    pair_records: list[dict[str, Any]] = []
    stopped_by: BaseException | None = None
    with _workdir(folder) as work:
        try:
            for role, name in (("baseline", baseline), ("candidate", candidate)):
                models[role] = _Prepared(url, name, batch_size, input_shape, inputs, work)
            from tqdm.auto import tqdm

            seq = 0
            with tqdm(total=2 * pairs, desc=f"loadtest {baseline} vs {candidate}", unit="run",
                      disable=not progress, leave=False) as bar:
                for i in range(1, pairs + 1):
                    record: dict[str, Any] = {"pair": i, "order": []}
                    for role in ("baseline", "candidate"):
                        seq += 1
                        bar.set_postfix_str(f"pair {i} {role}")
                        timings, stats = _one_run(url, models[role], work / f"run-{seq}-{role}", users=users,
                                                  spawn_rate=rate, duration_s=duration_s, batch_size=batch_size,
                                                  workers=workers, warmup_s=warmup_s, input_shape=input_shape,
                                                  grpc_timeout_s=grpc_timeout_s)
                        runs[role].append((timings, stats))
                        record["order"].append(role)
                        record[role] = {"run": seq, **stats.to_dict()}
                        bar.update(1)
                    record["speedup_throughput"] = ratio(record["candidate"]["throughput_rps"],
                                                         record["baseline"]["throughput_rps"])
                    record["speedup_p50"] = ratio(record["baseline"]["p50_ms"], record["candidate"]["p50_ms"])
                    pair_records.append(record)
                    if on_pair is not None:
                        on_pair(record)
        except (Interrupted, KeyboardInterrupt) as e:  # the runner killed its locust groups on the way out
            stopped_by = e
        done = len(pair_records)  # a half-finished pair is left out
        pooled = {role: pool_stats(runs[role][:done], warmup_s) if done else None for role in runs}
    result: dict[str, Any] = {
        "baseline": pooled["baseline"].to_dict() if pooled["baseline"] else None,
        "candidate": pooled["candidate"].to_dict() if pooled["candidate"] else None,
        "pairs": pair_records,
        "speedup_throughput": median_or_none([p["speedup_throughput"] for p in pair_records]),
        "speedup_p50": median_or_none([p["speedup_p50"] for p in pair_records]),
        "failures": sum(p.failures for p in pooled.values() if p),
        "interrupted": stopped_by is not None,
        "machine": machine,
        "server": {"url": url},
        "settings": {
            "users": users, "spawn_rate": rate, "duration_s": duration_s, "warmup_s": warmup_s,
            "batch_size": batch_size, "pairs": pairs, "workers": workers, "grpc_timeout_s": grpc_timeout_s,
            "order": "baseline then candidate in every pair (A B A B ...)",
            "speedup_statistic": "median of per-pair ratios",
            "percentiles": "numpy linear interpolation over exact per-request times of successful requests",
            "throughput": "successful requests per second over the measured window; x batch size = inferences/s",
            "models": {role: {"name": p.model, **p.settings()} for role, p in models.items()},
            "started_at": started, "wall_s": round(time.time() - started, 3),
        },
    }
    if stopped_by is not None:
        signum = signal_of(stopped_by)
        name = signal.Signals(signum).name
        result["interrupted_by"] = name
        result["gate"] = {"min_speedup": min_speedup, "passed": False,
                          "reason": f"interrupted by {name} after {done} of {pairs} pairs"}
        raise LoadTestInterrupted(f"interrupted by {name} after {done} of {pairs} pairs; every locust process "
                                  "was ended", signum, result) from None
    result["server"].update(server_version(url))
    passed, reason = check_gate(result, min_speedup)
    result["gate"] = {"min_speedup": min_speedup, "passed": passed, "reason": reason}
    return result


def check_gate(result: Mapping[str, Any], min_speedup: float | None) -> tuple[bool, str]:
    """Any failure fails; with ``min_speedup``, so does a throughput speed-up below it."""
    failures = int(result["baseline"]["failures"]) + int(result["candidate"]["failures"])
    if failures:
        return False, (f"{failures} failed requests (baseline {result['baseline']['failures']}, "
                       f"candidate {result['candidate']['failures']}): any failure fails the gate")
    if result["baseline"]["requests"] == 0 or result["candidate"]["requests"] == 0:
        return False, "a model answered no requests in the measured window: lengthen --duration"
    speedup = result.get("speedup_throughput")
    if min_speedup is None:
        return True, "no failures (no --min-speedup given)"
    if speedup is None or speedup < min_speedup:
        return False, f"throughput speed-up {speedup if speedup is not None else 'n/a'}x is below {min_speedup}x"
    return True, f"throughput speed-up {speedup}x >= {min_speedup}x with no failures"


@contextmanager
def _workdir(folder: str | Path | None) -> Iterator[Path]:
    """The given folder (kept) or a temporary one (removed afterwards, or by the next run after a SIGKILL)."""
    if folder is not None:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    clean_stale(_WORKDIR_PREFIX)  # the folders of runs that were SIGKILLed
    path = make_workdir(_WORKDIR_PREFIX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
