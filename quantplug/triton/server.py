"""The embedded Triton server: the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel.

That binary contains only the python backend, so quantplug's embedded models are python-backend models
(see :mod:`quantplug.triton.pbmodel`). :class:`TritonServer` copies the backend and the stub for the
running Python into a private temporary folder, starts the binary in its own process group bound to
127.0.0.1 on free (or given) ports, with this interpreter's ``bin`` first on PATH (the stub then runs this
Python, with its packages), waits until the server is live and reports every model that failed to load
with the server's own error line. ``stop()`` ends the whole process group (stubs included).

Exposure (what a local client can reach), by default:

- gRPC only. Triton 2.51's HTTP server (and its metrics server, the same HTTP library) crashes with
  SIGSEGV on one form-encoded request body (``Content-Type: application/x-www-form-urlencoded``) of
  about 4 MB or more (measured: 3.5 MB survives, 4.2 MB kills it), so HTTP and metrics are off unless
  asked for (``http=True``, ``metrics=True``): one request from any local client then stops the server.
- Models are loaded at start (``--model-control-mode=none``): load/unload requests are refused.
- The shared-memory, trace and logging APIs are restricted (Triton's ``--grpc-restricted-protocol``,
  and ``--http-restricted-api`` when HTTP is on) to requests carrying a header with a random secret
  that only this object knows (:attr:`TritonServer.admin_headers`). Open shared memory registration
  lets a client register a stub's own region as an output buffer and abort the server; log settings
  could be changed remotely. ``open_apis`` opens some of them to every client.

Repository: before Triton starts, interrupted ``repo add`` landings are finished, and no landing can
happen until Triton has read the repository (:func:`quantplug.triton.staging.serving_lock`), so a pair
is seen together; hidden folders in the root (an older quantplug's staging debris) are not models:
they are listed in ``ignored_folders``, never counted as failures.

Debris: the work folder (backend copy) records its owners; a later start removes the folders of runs
that were killed (SIGKILL). The python-backend stubs' shared-memory regions are removed when a crashed
server leaves them behind.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..childproc import die_with_parent, resolve_prctl
from ..errors import ServerError
from ..workdirs import add_owner, clean_stale, make_workdir

__all__ = ["RESTRICTABLE_APIS", "TritonServer", "find_binary", "free_port"]

#: Triton API groups restricted (closed to clients without the admin header) unless opened.
RESTRICTABLE_APIS = ("shared-memory", "trace", "logging")
WORKDIR_PREFIX = "quantplug-triton-"
_ADMIN_KEY = "quantplug-admin"


def find_binary() -> Path:
    """The bundled ``tritonserver`` (or ``$QUANTPLUG_TRITONSERVER``)."""
    override = os.environ.get("QUANTPLUG_TRITONSERVER")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the tritonserver binary is missing: nvidia-pytriton is not installed; "
                          "pip install nvidia-pytriton==0.7.0")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int, flag: str) -> None:
    """Refuse a port another socket listens on; a port whose old connections sit in TIME-WAIT (a server
    stopped moments ago) is free to reuse, as the server's own bind (SO_REUSEADDR) sees it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServerError(f"port {port} on {host} is in use ({e.strerror}); pick another {flag} "
                              "or stop the process holding it") from None


def signal_name(returncode: int | None) -> str:
    """``-11`` -> ``SIGSEGV (signal 11)``; a plain exit code as ``code 3``."""
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            return f"{signal.Signals(-returncode).name} (signal {-returncode})"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def _is_noise(line: str) -> bool:
    """Backtrace frames, table borders and blank lines explain nothing in a one-line report."""
    text = line.strip()
    return (not text or text[0] in "+|" or (text.split("#", 1)[0].isdigit() and "#" in text[:6]))


def _set_pdeathsig() -> None:  # runs in the child: new session, and die with the parent on Linux
    os.setsid()
    die_with_parent(signal.SIGTERM)


class TritonServer:
    """Serve ``repository`` with the bundled Triton; a context manager (``with TritonServer(repo) as s``).

    Ports left as None are picked free on ``host``; a given port that is taken is a :class:`ServerError`.
    ``http``/``metrics``: also serve Triton's HTTP API / Prometheus metrics (unsafe with untrusted local
    clients, see the module docstring); ``open_apis``: names from :data:`RESTRICTABLE_APIS` to open.
    ``require_all``: raise (and stop) when any model fails to load; with False the others keep serving and
    ``failed_models`` maps each failed model to the server's own error line. On Linux the server gets
    SIGTERM if the thread that started it dies, so a crashed caller leaves nothing behind.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        log_verbose: int = 0,
        startup_timeout: float = 120.0,
        require_all: bool = True,
        binary: str | Path | None = None,
        echo: Any = None,
        extra_args: list[str] | None = None,
        http: bool = False,
        metrics: bool = False,
        open_apis: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.repository = Path(repository)
        self.host = host
        self._ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.log_verbose = log_verbose
        self.startup_timeout = startup_timeout
        self.require_all = require_all
        self.binary = Path(binary) if binary else None
        self.echo = echo  # callable(str) receiving every server log line, or None
        self.extra_args = list(extra_args or [])
        self.http = http
        self.metrics = metrics
        unknown = sorted(set(open_apis) - set(RESTRICTABLE_APIS))
        if unknown:
            raise ServerError(f"unknown API {', '.join(unknown)} to open; choose from {', '.join(RESTRICTABLE_APIS)}")
        self.restricted_apis = tuple(a for a in RESTRICTABLE_APIS if a not in set(open_apis))
        self._admin_secret = secrets.token_urlsafe(24)
        self.cleaned_workdirs: list[Path] = []
        self.recovered: list[str] = []  # what finishing interrupted `repo add` landings did at start
        self.ignored_folders: dict[str, str] = {}  # hidden leftovers in the root Triton tried to load
        self._repo_lock: contextlib.AbstractContextManager[list[str]] | None = None
        self._lines_at_live = 0
        self._lines_total = 0
        self._shm_regions: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.failed_models: dict[str, str] = {}
        self.log: collections.deque[str] = collections.deque(maxlen=5000)
        self._workdir: Path | None = None
        self._reader: threading.Thread | None = None

    # URLs -------------------------------------------------------------------------------------
    @property
    def grpc_port(self) -> int:
        return int(self._ports["grpc"] or 0)

    @property
    def http_port(self) -> int:
        return int(self._ports["http"] or 0)

    @property
    def metrics_port(self) -> int:
        return int(self._ports["metrics"] or 0)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        if not self.http:
            raise ServerError("this server has no HTTP endpoint; start it with http=True (serve --http)")
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        if not self.metrics:
            raise ServerError("this server has no metrics endpoint; start it with metrics=True (serve --metrics)")
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC headers that unlock the restricted APIs (for the owner of this object only)."""
        return {f"triton-grpc-protocol-{_ADMIN_KEY}": self._admin_secret}

    # lifecycle --------------------------------------------------------------------------------
    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        from .repository import check_repository

        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} is not a folder; create one with "
                              "`quantplug repo add`")
        problems = check_repository(self.repository)
        if problems and problems[0].endswith("create models with `quantplug repo add`"):
            raise ServerError(problems[0])
        binary = self.binary or find_binary()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise ServerError(f"the tritonserver binary is missing or not executable at {binary}; "
                              "pip install --force-reinstall nvidia-pytriton==0.7.0")
        root = binary.parent.parent
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / pyver / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in (root / "python_backend_stubs").glob("*")) or ["none"]
            raise ServerError(f"{binary} has no python backend stub for Python {pyver} (it has {', '.join(have)}); "
                              "use a supported Python or a matching nvidia-pytriton")
        wanted = {"grpc": True, "http": self.http, "metrics": self.metrics}
        for key, flag in (("grpc", "--grpc-port"), ("http", "--http-port"), ("metrics", "--metrics-port")):
            port = self._ports[key]
            if not wanted[key]:
                self._ports[key] = None
            elif port:
                _check_port(self.host, port, flag)
            else:
                self._ports[key] = free_port(self.host)
        self.cleaned_workdirs = clean_stale(WORKDIR_PREFIX)
        self._workdir = make_workdir(WORKDIR_PREFIX)
        backend_dir = self._workdir / "backends" / "python"
        shutil.copytree(root / "backends" / "python", backend_dir, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, backend_dir / "triton_python_backend_stub")
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        libs = root.parent.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(libs), env.get("LD_LIBRARY_PATH", "")] if p)
        cmd = [
            str(binary),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={self._workdir / 'backends'}",
            "--model-control-mode=none",
            "--exit-on-error=false",
            "--strict-readiness=false",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--allow-http={str(self.http).lower()}",
            f"--allow-metrics={str(self.metrics).lower()}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.http:
            cmd += [f"--http-address={self.host}", f"--http-port={self.http_port}"]
        if self.metrics:
            cmd += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                    "--allow-gpu-metrics=false"]
        if self.restricted_apis:
            rule = f"{','.join(self.restricted_apis)}:{_ADMIN_KEY}={self._admin_secret}"
            cmd.append(f"--grpc-restricted-protocol={rule}")
            if self.http:
                cmd.append(f"--http-restricted-api={rule}")
        return cmd + self.extra_args, env

    def start(self) -> TritonServer:
        if self.process is not None:
            raise ServerError("this TritonServer is already started; stop() it first")
        cmd, env = self._prepare()
        self.returncode = None
        self._hold_repository()
        try:
            resolve_prctl()
            self.process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig)
        except OSError as e:
            self._release_repository()
            self._cleanup_workdir()
            raise ServerError(f"cannot run {cmd[0]} ({e}); reinstall nvidia-pytriton==0.7.0") from e
        assert self._workdir is not None
        add_owner(self._workdir, self.process.pid)  # stale only once the server is gone too
        self._reader = threading.Thread(target=self._read_log, name="tritonserver-log", daemon=True)
        self._reader.start()
        try:
            try:
                self._wait_live()
            finally:
                self._release_repository()
            self._lines_at_live = self._lines_total
            self._collect_failures()
            self._shm_regions = self._stub_regions()
        except BaseException:
            self.stop()
            raise
        return self

    def _hold_repository(self) -> None:
        """Finish interrupted `repo add` landings, then keep new ones out until Triton has read the repository."""
        from .staging import serving_lock

        self._repo_lock = serving_lock(self.repository)
        self.recovered = self._repo_lock.__enter__()

    def _release_repository(self) -> None:
        lock, self._repo_lock = self._repo_lock, None
        if lock is not None:
            lock.__exit__(None, None, None)

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            self._lines_total += 1
            if self.echo is not None:
                self.echo(line)

    def _error_lines(self) -> list[str]:
        """Triton's error lines (``E1126 12:00:00.0 pid file:line] "message"``), cut before any traceback."""
        lines = [ln for ln in list(self.log) if ln[:1] == "E" and ln[1:5].isdigit()]
        return [ln.split("\\n\\nAt:")[0].split("\\nAt:")[0] for ln in lines]

    def _client(self) -> Any:
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url)

    def _wait_live(self) -> None:
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.startup_timeout
        client = self._client()
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    if self._reader is not None:
                        self._reader.join(timeout=5)
                    errors = self._error_lines() or list(self.log)[-3:]
                    loads = [ln for ln in errors if "failed to load" in ln]
                    errors = loads or errors  # the cause, not the shutdown noise after it
                    raise ServerError(f"tritonserver exited with {signal_name(self.process.returncode)} at start: "
                                      f"{' | '.join(errors[-3:]) or 'no output'}")
                try:
                    if client.is_server_live(client_timeout=1):
                        return
                except InferenceServerException:
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        raise ServerError(f"tritonserver did not become live within {self.startup_timeout:.0f} s; "
                          "raise startup_timeout or check the log (log_verbose=1)")

    def model_states(self) -> dict[str, dict[str, str]]:
        """``{name: {"version", "state", "reason"}}`` from the repository index (state READY when served)."""
        from tritonclient.utils import InferenceServerException

        client = self._client()
        try:
            index = client.get_model_repository_index(as_json=True, client_timeout=10).get("models", [])
        except InferenceServerException as e:
            raise ServerError(f"cannot query the repository index at {self.grpc_url}: {e}") from e
        finally:
            client.close()
        return {m["name"]: {"version": str(m.get("version", "")), "state": m.get("state", ""),
                            "reason": m.get("reason", "")} for m in index}

    def _collect_failures(self) -> None:
        states = self.model_states()
        errors = self._error_lines()
        self.failed_models = {}
        self.ignored_folders = {}
        for name, st in states.items():
            if st["state"] != "READY":
                line = next((ln for ln in errors if f"'{name}'" in ln), "") or st["reason"] or st["state"]
                # a hidden folder is debris (an older quantplug's staging), never a model: not a failure
                (self.ignored_folders if name.startswith(".") else self.failed_models)[name] = line
        states = {n: st for n, st in states.items() if n not in self.ignored_folders}
        if not states:
            raise ServerError(f"{self.repository} holds no model Triton could find; add one with `quantplug repo add`")
        if self.failed_models and (self.require_all or len(self.failed_models) == len(states)):
            detail = "; ".join(f"{n}: {ln}" for n, ln in sorted(self.failed_models.items()))
            raise ServerError(f"{len(self.failed_models)} of {len(states)} models failed to load: {detail}; "
                              "fix them (quantplug repo check) or serve the others with require_all=False")

    def ready_models(self) -> list[str]:
        return sorted(n for n, st in self.model_states().items() if st["state"] == "READY")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_report(self) -> str:
        """Why the server ended after it was live: its signal (or code) and the log lines before the end.

        Backtrace frames and the start-up banner are left out; lines from after the server became live
        come first, as they are the ones that explain a crash.
        """
        proc = self.process
        code = proc.poll() if proc is not None else self.returncode
        if self._reader is not None:
            self._reader.join(timeout=5)
        lines = list(self.log)
        after_live = max(0, self._lines_total - self._lines_at_live)
        recent = [ln for ln in lines[len(lines) - min(after_live, len(lines)):] if not _is_noise(ln)]
        if not recent:
            errors = self._error_lines()
            recent = errors[-1:]
        detail = " | ".join(" ".join(ln.split()) for ln in recent[-5:]) or "no log line after start"
        return f"tritonserver ended with {signal_name(code)} while serving; its last log lines: {detail}"

    def _group_pids(self) -> list[int]:
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry.name)) == self.process.pid:
                        pids.append(int(entry.name))
        return pids

    def _stub_regions(self) -> list[str]:
        """The shared-memory region names the python-backend stubs were started with (their command line)."""
        regions = []
        for pid in self._group_pids():
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if args and args[0].endswith(b"triton_python_backend_stub") and len(args) > 2:
                    regions.append(args[2].decode(errors="replace"))
        return regions

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``timeout``; idempotent."""
        proc, self.process = self.process, None
        if proc is not None:
            pgid = proc.pid  # the child called setsid(): its pid is the group id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # python-backend stubs exit just after the server
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.returncode = proc.returncode
            if self._reader is not None:
                self._reader.join(timeout=5)
        self._release_repository()
        self._remove_regions()
        self._cleanup_workdir()

    def _remove_regions(self) -> None:
        """A stub that exits cleanly removes its region; after a crash (SIGSEGV, SIGABRT) it stays in /dev/shm."""
        for name in self._shm_regions:
            if "/" not in name and name.startswith("triton_python_backend_shm_region_"):
                with contextlib.suppress(OSError):
                    os.unlink(f"/dev/shm/{name}")
        self._shm_regions = []

    def _cleanup_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the contract
        with contextlib.suppress(Exception):
            if self.process is not None:
                self.stop(timeout=5)
