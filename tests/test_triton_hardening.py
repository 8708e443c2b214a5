"""The embedded server under hostile local clients: what listens, what is closed, what a crash reports.

Everything goes through the real tritonserver: the attacks are the ones that took Triton 2.51 down
(a 5 MB form-encoded HTTP body; a client registering a python-backend stub's own shared-memory region
as its output buffer), and each test checks the server still serves afterwards.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from quantplug.errors import ServerError
from quantplug.triton.repository import add_model
from quantplug.triton.server import TritonServer

from .test_triton_repository import tiny_onnx

FORM_BODY = 5_000_000  # form-encoded bodies of about 4 MB or more crash Triton 2.51's HTTP server


def form_post(port: int, path: str = "/v2/models/tiny/infer", size: int = FORM_BODY) -> bytes:
    """One HTTP/1.1 POST with a form-encoded body of ``size`` bytes; returns what came back (maybe nothing)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head + b"a=b&" * (size // 4))
            return s.recv(200)
        except OSError:
            return b""


def listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def infer_tiny(url: str, **kwargs: object) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), np.float32))
        return client.infer("tiny", [inp], client_timeout=30, **kwargs).as_numpy("y")  # type: ignore[arg-type]
    finally:
        client.close()


def stub_region(server: TritonServer) -> str:
    """What any local user can read from `ps`: the stub's shared-memory region name is its second argument."""
    assert server.process is not None
    for p in psutil.Process(server.process.pid).children(recursive=True):
        args = p.cmdline()
        if args and args[0].endswith("triton_python_backend_stub"):
            return args[2]
    raise AssertionError("no python-backend stub found")


def shm_attack(url: str, region: str) -> list[str]:
    """Register the stub's region as an output buffer, then infer into it; the errors met on the way."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    errors = []
    client = grpcclient.InferenceServerClient(url)
    try:
        try:
            client.register_system_shared_memory("stolen", f"/{region}", 64)
        except InferenceServerException as e:
            errors.append(str(e))
        out = grpcclient.InferRequestedOutput("y")
        out.set_shared_memory("stolen", 12)
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), np.float32))
        try:
            client.infer("tiny", [inp], outputs=[out], client_timeout=30)
        except InferenceServerException as e:
            errors.append(str(e))
    finally:
        client.close()
    return errors


def wait_dead(server: TritonServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("hardening")
    add_model(work / "repo", "tiny", tiny_onnx(work / "tiny.onnx"))
    return work / "repo"


@pytest.fixture(scope="module")
def guarded(repo: Path) -> Iterator[TritonServer]:
    """The defaults: gRPC only, shared memory / trace / logging restricted."""
    with TritonServer(repo) as server:
        yield server


def test_default_server_listens_on_grpc_only(guarded: TritonServer) -> None:
    assert guarded.process is not None
    assert listening_ports(guarded.process.pid) == {guarded.grpc_port}
    with pytest.raises(ServerError, match="no HTTP endpoint.*--http"):
        _ = guarded.http_url
    with pytest.raises(ServerError, match="no metrics endpoint.*--metrics"):
        _ = guarded.metrics_url


def test_5mb_form_body_to_the_server_port_leaves_it_serving(guarded: TritonServer) -> None:
    form_post(guarded.grpc_port)  # HTTP/1.1 at the only port there is: refused by the HTTP/2 server
    time.sleep(1)
    assert guarded.is_running()
    np.testing.assert_allclose(infer_tiny(guarded.grpc_url), np.full((1, 3), 4.0))


def test_shared_memory_registration_is_refused_and_server_keeps_serving(guarded: TritonServer) -> None:
    region = stub_region(guarded)
    errors = shm_attack(guarded.grpc_url, region)
    assert "restricted" in errors[0] and "Unable to find shared memory region: 'stolen'" in errors[1]
    time.sleep(0.5)
    assert guarded.is_running() and Path("/dev/shm", region).exists()
    np.testing.assert_allclose(infer_tiny(guarded.grpc_url), np.full((1, 3), 4.0))


def test_log_and_trace_settings_are_closed_except_to_the_owner(guarded: TritonServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(guarded.grpc_url)
    try:
        for call in (lambda **kw: client.update_log_settings({"log_verbose_level": 3}, **kw),
                     lambda **kw: client.get_trace_settings(**kw),
                     lambda **kw: client.get_system_shared_memory_status(**kw)):
            with pytest.raises(InferenceServerException, match="restricted"):
                call()
        # the restriction is Triton's header check: the owner's secret header passes it
        assert client.get_log_settings(headers=guarded.admin_headers, as_json=True)["settings"]
        # reading what is served stays open
        assert client.get_model_repository_index(as_json=True)["models"][0]["state"] == "READY"
    finally:
        client.close()


def test_opened_shared_memory_is_the_documented_risk(repo: Path) -> None:
    """With the API opened on request, the attack aborts the server: the report names the signal and the
    cause, and the region the dead stub left in /dev/shm is removed by stop()."""
    server = TritonServer(repo, open_apis=["shared-memory"]).start()
    try:
        region = stub_region(server)
        shm_attack(server.grpc_url, region)
        wait_dead(server)
        assert not server.is_running()
        report = server.exit_report()
        # the same attack ends in SIGABRT or SIGSEGV from one run to the next
        assert re.match(r"tritonserver ended with SIG(ABRT|SEGV) \(signal (6|11)\) while serving", report), report
        assert "lock_exception" in report and "0x0000" not in report  # the cause, no backtrace frames
    finally:
        server.stop()
    assert not Path("/dev/shm", region).exists()


def test_unknown_api_to_open_is_one_clear_error(repo: Path) -> None:
    with pytest.raises(ServerError, match="unknown API model-control to open; choose from shared-memory, trace"):
        TritonServer(repo, open_apis=["model-control"])


def test_port_in_time_wait_is_free_to_reuse(repo: Path) -> None:
    """The HTTP server closes first, so its port sits in TIME-WAIT after a stop; the next start on the same
    ports works (a bind without SO_REUSEADDR, the old pre-check, is refused there)."""
    import urllib.request

    first = TritonServer(repo, http=True).start()
    ports = {"grpc_port": first.grpc_port, "http_port": first.http_port}
    try:
        with urllib.request.urlopen(f"{first.http_url}/v2/health/live", timeout=10) as r:
            assert r.status == 200
    finally:
        first.stop()
    states = [c.status for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == ports["http_port"]]
    assert psutil.CONN_TIME_WAIT in states, states
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", ports["http_port"]))
    with TritonServer(repo, http=True, **ports) as second:
        assert (second.grpc_port, second.http_port) == (ports["grpc_port"], ports["http_port"])
        np.testing.assert_allclose(infer_tiny(second.grpc_url), np.full((1, 3), 4.0))
