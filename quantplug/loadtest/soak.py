"""The soak: an INT8 model at saturation for minutes, with malformed and hostile requests mixed in.

Good requests come from a bounded locust run (closed loop, exact per-request timings); a thread in this
process sends a cycle of malformed requests (wrong dtype, rank, shape, batch over the maximum, missing,
extra, empty, unknown model and version, a 64 MB request, garbage bytes and a 5 MB HTTP form body at the
gRPC port, a shared-memory registration of a stub's own region, a log-settings change) every
``malformed_interval_s``; another samples the resident memory of the server and its python-backend stubs.

What must hold, and what the result says: 0 failures of good requests, every malformed request
answered with an error (none accepted), the server alive at the end; p99 latency and RSS in the first
minute against the last minute show whether anything degrades or leaks.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import InputSpec

__all__ = ["MALFORMED_KINDS", "malformed_cycle", "rss_of_group", "soak_server", "summarize"]

MALFORMED_KINDS = (
    "wrong dtype", "wrong rank", "wrong shape", "batch over max", "empty batch", "missing input", "extra input",
    "duplicate input", "unknown model", "unknown version", "64 MB request", "garbage bytes", "5 MB HTTP form body",
    "shared-memory registration", "log settings change",
)


def rss_of_group(pgid: int) -> dict[str, int]:
    """Resident bytes of every process in group ``pgid``: ``{"server": n, "stub <pid>": n, ...}`` (Linux /proc)."""
    import os

    out: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
            rss = next(int(ln.split()[1]) * 1024 for ln in status.splitlines() if ln.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            continue
        out["server" if int(entry.name) == pgid else f"stub {entry.name}"] = rss
    return out


def _stub_region(pgid: int) -> str:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args[0].endswith(b"triton_python_backend_stub") and len(args) > 2:
                return args[2].decode(errors="replace")
    return "triton_python_backend_shm_region_unknown"


def malformed_cycle(url: str, model: str, specs: list[InputSpec], max_batch: int, pgid: int,
                    big_request: bool = True) -> dict[str, bool]:
    """Send one of each malformed request; ``{kind: answered with an error (or refused)}``."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    host, port = url.rsplit(":", 1)
    spec = specs[0]
    row = tuple(spec.shape[1:])

    def tensor(name: str, shape: tuple[int, ...], dtype: str, np_dtype: Any) -> Any:
        t = grpcclient.InferInput(name, list(shape), dtype)
        t.set_data_from_numpy(np.zeros(shape, np_dtype))
        return t

    good = [tensor(s.name, s.shape, s.datatype, np.float32 if s.datatype == "FP32" else np.int64) for s in specs]
    cases: dict[str, Callable[[Any], Any]] = {
        "wrong dtype": lambda c: c.infer(model, [tensor(spec.name, spec.shape, "FP64", np.float64), *good[1:]]),
        "wrong rank": lambda c: c.infer(model, [tensor(spec.name, (*spec.shape, 1), "FP32", np.float32), *good[1:]]),
        "wrong shape": lambda c: c.infer(model, [tensor(spec.name, (spec.shape[0], *[d + 1 for d in row]), "FP32",
                                                        np.float32), *good[1:]]),
        "batch over max": lambda c: c.infer(model, [tensor(spec.name, (max_batch + 1, *row), "FP32", np.float32),
                                                    *good[1:]]),
        "empty batch": lambda c: c.infer(model, [tensor(spec.name, (0, *row), "FP32", np.float32), *good[1:]]),
        "missing input": lambda c: c.infer(model, []),
        "extra input": lambda c: c.infer(model, [*good, tensor("not_an_input", (1, 1), "FP32", np.float32)]),
        "duplicate input": lambda c: c.infer(model, [*good, good[0]]),
        "unknown model": lambda c: c.infer(f"{model}_no_such", good),
        "unknown version": lambda c: c.infer(model, good, model_version="999"),
        "shared-memory registration": lambda c: c.register_system_shared_memory("soak", f"/{_stub_region(pgid)}", 64),
        "log settings change": lambda c: c.update_log_settings({"log_verbose_level": 3}),
    }
    if big_request:
        n = 64 * 2**20 // 4 // max(1, int(np.prod(row)))
        cases["64 MB request"] = lambda c: c.infer(model, [tensor(spec.name, (n, *row), "FP32", np.float32)])
    answered: dict[str, bool] = {}
    client = grpcclient.InferenceServerClient(url)
    try:
        for kind, call in cases.items():
            try:
                call(client)
                answered[kind] = False  # accepted: a malformed request must not be
            except InferenceServerException:
                answered[kind] = True
    finally:
        client.close()
    for kind, payload in (("garbage bytes", bytes(range(256)) * 64),
                          ("5 MB HTTP form body", b"POST /v2/models/x/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"application/x-www-form-urlencoded\r\nContent-Length: 5000000\r\n\r\n" + b"a=b&" * 1250000)):
        try:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(payload)
                s.recv(64)
        except OSError:
            pass
        answered[kind] = True  # judged by the server staying up and good requests not failing
    return answered


def _window_stats(t: Any, lo: float, hi: float) -> dict[str, Any]:
    sel = (t.start >= lo) & (t.start < hi)
    ok = t.ms[sel & t.ok]
    p50, p99 = (float(np.percentile(ok, q)) for q in (50, 99)) if ok.size else (None, None)
    return {"requests": int(sel.sum()), "failures": int((sel & ~t.ok).sum()), "p50_ms": p50, "p99_ms": p99}


def _mean_rss(samples: list[dict[str, Any]], lo: float, hi: float, key: str) -> float | None:
    have = [s for s in samples if s.get(key) is not None]
    vals = [s[key] for s in have if lo <= s["t"] < hi]
    if not vals and have:  # a short window on a loaded machine may hold no sample: take the nearest one
        vals = [min(have, key=lambda s: min(abs(s["t"] - lo), abs(s["t"] - hi)))[key]]
    return round(float(np.mean(vals)) / 2**20, 1) if vals else None


def summarize(timings: Any, samples: list[dict[str, Any]], malformed: Counter[str], accepted: Counter[str],
              window_s: float) -> dict[str, Any]:
    """Requests, failures of good requests, p99 and RSS of the first against the last window."""
    start, end = float(timings.start.min()), float(timings.start.max())
    first = _window_stats(timings, start, start + window_s)
    last = _window_stats(timings, end - window_s, end + 1e-6)
    rss = {}
    for key in ("server", "stubs"):
        a = _mean_rss(samples, start, start + window_s, key)
        b = _mean_rss(samples, end - window_s, end + 1e-6, key)
        rss[key] = {"first_window_mib": a, "last_window_mib": b,
                    "growth_mib": round(b - a, 1) if a is not None and b is not None else None}
    errors = Counter(timings.errors)
    return {
        "good_requests": len(timings), "good_failures": int((~timings.ok).sum()),
        "good_failure_errors": dict(errors.most_common(5)),
        "malformed_requests": sum(malformed.values()), "malformed_by_kind": dict(malformed),
        "malformed_accepted": dict(accepted),
        "window_s": window_s, "first_window": first, "last_window": last,
        "p99_last_over_first": (round(last["p99_ms"] / first["p99_ms"], 3)
                                if first["p99_ms"] and last["p99_ms"] else None),
        "rss": rss,
    }


def soak_server(server: Any, model: str, folder: Path, *, minutes: float, batch_size: int, users: int,
                malformed_interval_s: float = 1.0, rss_interval_s: float = 5.0,
                step: Callable[[str], None] = lambda _s: None) -> dict[str, Any]:
    """Soak ``model`` on a started :class:`~quantplug.triton.server.TritonServer`; the summary dict."""
    from .preflight import describe_model, request_specs
    from .runner import run_locust
    from .timings import read_timings

    url = server.grpc_url
    info = describe_model(url, model)
    specs = request_specs(info, batch_size)
    pgid = server.process.pid
    stop = threading.Event()
    malformed: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    crashed: list[str] = []

    def bad_loop() -> None:
        cycle = 0
        while not stop.wait(malformed_interval_s):
            cycle += 1
            try:
                for kind, ok in malformed_cycle(url, model, specs, info.max_batch_size, pgid,
                                                big_request=cycle % 20 == 1).items():
                    malformed[kind] += 1
                    if not ok:
                        accepted[kind] += 1
            except Exception as e:  # noqa: BLE001 - the server died or refused connections: recorded
                crashed.append(f"{type(e).__name__}: {e}")
                if not server.is_running():
                    return

    def rss_loop() -> None:
        while True:
            rss = rss_of_group(pgid)
            stubs = [v for k, v in rss.items() if k.startswith("stub")]
            samples.append({"t": time.time(), "server": rss.get("server"), "stubs": sum(stubs) if stubs else None,
                            "stub_count": len(stubs)})
            if stop.wait(rss_interval_s):
                return

    threads = [threading.Thread(target=f, daemon=True, name=n) for f, n in ((bad_loop, "soak-malformed"),
                                                                             (rss_loop, "soak-rss"))]
    for t in threads:
        t.start()
    step(f"soak {model}: {minutes:g} min at saturation, malformed requests every {malformed_interval_s:g} s")
    try:
        run = run_locust(folder / "locust", url, model, users=users, spawn_rate=users, duration_s=minutes * 60,
                         batch_size=batch_size)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    timings = read_timings(folder / "locust")
    alive = server.is_running()
    window = min(60.0, minutes * 60 / 3)
    summary: dict[str, Any] = (summarize(timings, samples, malformed, accepted, window) if len(timings)
                               else {"good_requests": 0, "good_failures": 0})
    summary.update({
        "server_alive_at_end": alive, "server_exit": None if alive else server.exit_report(),
        "malformed_client_errors": crashed[:5], "locust_notes": run.notes, "rss_samples": samples,
        "inputs": [s.to_dict() for s in specs],
    })
    summary["passed"] = bool(alive and summary["good_requests"] and summary["good_failures"] == 0
                             and not summary.get("malformed_accepted"))
    return summary
