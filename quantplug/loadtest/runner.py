"""Run locust as bounded subprocesses: one standalone process, or a master plus N workers on 127.0.0.1.

Each locust process runs in its own session (process group) and gets SIGKILL if the process that
started it dies (Linux: PR_SET_PDEATHSIG), so even a SIGKILLed ``quantplug loadtest`` leaves no load
generator behind; SIGINT/SIGTERM are held while a child is started and listed. A run ends when the processes exit by
themselves; past its time bound, or when the timings are complete and a process still lingers at exit
(seen with tritonclient over gRPC: the summary printed, then SIGTERM ignored), the group is killed with
SIGKILL and the run says so in its notes.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..childproc import die_with_parent, resolve_prctl
from ..errors import LoadTestError
from .timings import DONE_FILE

__all__ = ["LocustRun", "check_locust", "run_locust", "locustfile_path", "free_port"]

_STARTUP_S = 30.0  # import, connect, spawn allowance before the run-time clock matters
WATCHDOG_MARK = "locust did not exit"  # what the gRPC user's exit watchdog prints before forcing the exit
_EXIT_GRACE_S = 10.0  # after done.json, how long processes may take to exit (their watchdog: 5 s)


def locustfile_path() -> Path:
    """The packaged locustfile the orchestrator runs (``loadtests/triton_grpc.py`` is its public twin)."""
    return Path(__file__).with_name("locustfile.py")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_locust() -> None:
    """Fail early, in one line, when locust cannot be imported by this Python."""
    if importlib.util.find_spec("locust") is None:
        raise LoadTestError(f"locust is not installed in {sys.executable}: pip install locust")


@dataclass
class LocustRun:
    folder: Path
    returncodes: list[int | None]
    killed: bool
    hung_after_done: bool
    wall_s: float
    notes: list[str] = field(default_factory=list)
    log_tail: str = ""


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _own_session() -> None:  # in the child: its own process group, and SIGKILL if this process dies
    os.setsid()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    die_with_parent(signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
        pass


def _tail(paths: list[Path], chars: int = 2000) -> str:
    parts = []
    for p in paths:
        if p.exists():
            text = p.read_text(errors="replace")
            parts.append(f"--- {p.name} ---\n{text[-chars:]}")
    return "\n".join(parts)


def run_locust(
    folder: Path,
    url: str,
    model: str,
    *,
    users: int,
    spawn_rate: float,
    duration_s: float,
    batch_size: int,
    workers: int = 0,
    input_shape: str = "",
    inputs_npz: str = "",
    grpc_timeout_s: float = 60.0,
    locustfile: Path | None = None,
    exit_grace_s: float = _EXIT_GRACE_S,
) -> LocustRun:
    """One headless locust run writing exact timings into ``folder``; always returns with no process left."""
    check_locust()
    folder.mkdir(parents=True, exist_ok=True)
    lf = str(locustfile or locustfile_path())
    base = [sys.executable, "-m", "locust", "-f", lf]
    custom = ["--model", model, "--batch-size", str(batch_size), "--timings-dir", str(folder),
              "--grpc-timeout", str(grpc_timeout_s)]
    if input_shape:
        custom += ["--input-shape", input_shape]
    if inputs_npz:
        custom += ["--inputs", inputs_npz]
    # users finish their request in flight when the run ends (killing gRPC calls mid-flight is what makes
    # locust hang at exit with tritonclient); a request slower than this is cut off
    stop_timeout = max(1, min(30, round(grpc_timeout_s)))
    head = ["--headless", "--host", url, "-u", str(users), "-r", str(spawn_rate), "--only-summary",
            "--stop-timeout", str(stop_timeout), "--exit-code-on-error", "0", "--loglevel", "INFO"]
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # the venv's bin first, so anything locust starts finds the same Python packages
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    commands: list[tuple[str, list[str]]] = []
    if workers > 0:
        port = free_port()
        # --timed-run: the master stops its workers and waits for their last timings before quitting
        commands.append(("master", base + head + custom + ["--timed-run", str(duration_s),
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--expect-workers", str(workers), "--expect-workers-max-wait", str(int(_STARTUP_S))]))
        for i in range(workers):
            commands.append((f"worker{i}", base + ["--worker", "--master-host", "127.0.0.1", "--master-port",
                                                   str(port), "--loglevel", "INFO"] + custom))
    else:
        commands.append(("locust", base + head + custom + ["--timed-run", str(duration_s)]))

    bound = _STARTUP_S + users / max(spawn_rate, 1e-9) + duration_s + stop_timeout + (60 if workers else 0) + exit_grace_s
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    t0 = time.monotonic()
    killed = hung_after_done = False
    notes: list[str] = []
    try:
        for name, cmd in commands:
            log = folder / f"{name}.log"
            logs.append(log)
            # a signal between the fork and the append would orphan the child: hold it until it is listed
            resolve_prctl()
            held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                with open(log, "wb") as out:
                    procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env=env, preexec_fn=_own_session))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        done_at: float | None = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if done_at is None and (folder / DONE_FILE).exists():
                done_at = now
            if done_at is not None and now - done_at > exit_grace_s:
                hung_after_done = True
                break
            if now - t0 > bound:
                break
            time.sleep(0.1)
    finally:
        for (name, _), p in zip(commands, procs, strict=False):
            if p.poll() is None:
                killed = True
                _kill_group(p)
                if hung_after_done:
                    notes.append(f"locust {name} (pid {p.pid}) wrote its complete results, then did not exit within "
                                 f"{exit_grace_s:.0f} s; its process group was killed with SIGKILL")
                else:
                    notes.append(f"locust {name} (pid {p.pid}) did not finish within its {bound:.0f} s bound; "
                                 f"its process group was killed with SIGKILL")
            else:  # the process exited; end anything it left behind in its group
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
    wall = time.monotonic() - t0
    for (name, _), log in zip(commands, logs, strict=False):
        if log.exists() and WATCHDOG_MARK in log.read_text(errors="replace"):
            notes.append(f"locust {name} hung at exit after writing its results; its exit watchdog ended it")
    return LocustRun(folder=folder, returncodes=[p.returncode for p in procs], killed=killed,
                     hung_after_done=hung_after_done, wall_s=round(wall, 3), notes=notes,
                     log_tail=_tail(logs))
