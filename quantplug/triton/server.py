"""The embedded Triton server: the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel.

That binary contains only the python backend, so quantplug's embedded models are python-backend models
(see :mod:`quantplug.triton.pbmodel`). :class:`TritonServer` copies the backend and the stub for the
running Python into a private temporary folder, starts the binary in its own process group bound to
127.0.0.1 on free (or given) ports, with this interpreter's ``bin`` first on PATH (the stub then runs this
Python, with its packages), waits until the server is live and reports every model that failed to load
with the server's own error line. ``stop()`` ends the whole process group (stubs included).

Security: the server runs with ``--model-control-mode=none``: models are loaded at start and the
load/unload endpoints refuse every request, so anonymous clients cannot change what is served.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ServerError

__all__ = ["TritonServer", "find_binary", "free_port"]


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServerError(f"port {port} on {host} is in use ({e.strerror}); pick another {flag} "
                              "or stop the process holding it") from None


def _set_pdeathsig() -> None:  # runs in the child: new session, and die with the parent on Linux
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TritonServer:
    """Serve ``repository`` with the bundled Triton; a context manager (``with TritonServer(repo) as s``).

    Ports left as None are picked free on ``host``; a given port that is taken is a :class:`ServerError`.
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
        self.process: subprocess.Popen[bytes] | None = None
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
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

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
        for key, flag in (("grpc", "--grpc-port"), ("http", "--http-port"), ("metrics", "--metrics-port")):
            port = self._ports[key]
            if port:
                _check_port(self.host, port, flag)
            else:
                self._ports[key] = free_port(self.host)
        self._workdir = Path(tempfile.mkdtemp(prefix="quantplug-triton-"))
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
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]
        return cmd, env

    def start(self) -> TritonServer:
        if self.process is not None:
            raise ServerError("this TritonServer is already started; stop() it first")
        cmd, env = self._prepare()
        try:
            self.process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig)
        except OSError as e:
            self._cleanup_workdir()
            raise ServerError(f"cannot run {cmd[0]} ({e}); reinstall nvidia-pytriton==0.7.0") from e
        self._reader = threading.Thread(target=self._read_log, name="tritonserver-log", daemon=True)
        self._reader.start()
        try:
            self._wait_live()
            self._collect_failures()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if self.echo is not None:
                self.echo(line)

    def _error_lines(self) -> list[str]:
        """Triton's error lines (``E1126 12:00:00.0 pid file:line] "message"``), cut before any traceback."""
        lines = [ln for ln in list(self.log) if ln[:1] == "E" and ln[1:5].isdigit()]
        return [ln.split("\\n\\nAt:")[0].split("\\nAt:")[0] for ln in lines]

    def _wait_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)
                errors = self._error_lines() or list(self.log)[-3:]
                loads = [ln for ln in errors if "failed to load" in ln]
                errors = loads or errors  # the cause, not the shutdown noise after it
                raise ServerError(f"tritonserver exited with code {self.process.returncode} at start: "
                                  f"{' | '.join(errors[-3:]) or 'no output'}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/live", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ServerError(f"tritonserver did not become live within {self.startup_timeout:.0f} s; "
                          "raise startup_timeout or check the log (log_verbose=1)")

    def model_states(self) -> dict[str, dict[str, str]]:
        """``{name: {"version", "state", "reason"}}`` from the repository index (state READY when served)."""
        req = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                index = json.loads(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"cannot query the repository index at {self.http_url}: {e}") from e
        return {m["name"]: {"version": str(m.get("version", "")), "state": m.get("state", ""),
                            "reason": m.get("reason", "")} for m in index}

    def _collect_failures(self) -> None:
        states = self.model_states()
        errors = self._error_lines()
        self.failed_models = {}
        for name, st in states.items():
            if st["state"] != "READY":
                line = next((ln for ln in errors if f"'{name}'" in ln), "") or st["reason"] or st["state"]
                self.failed_models[name] = line
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
            if self._reader is not None:
                self._reader.join(timeout=5)
        self._cleanup_workdir()

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
