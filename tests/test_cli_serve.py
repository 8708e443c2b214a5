"""CLI glue, end to end through real subprocesses: repo add/check, serve (SIGTERM), infer, evaluate."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, run_cli
from .test_triton_server import processes_mentioning
from .triton_models import DigitsWorkload, build_models


@pytest.fixture(scope="module")
def quantize_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shaped like `quantplug quantize --output`: model.onnx (QDQ), model_fp32.onnx, recipe.json."""
    out = tmp_path_factory.mktemp("quantized")
    build_models(out, DigitsWorkload())
    (out / "recipe.json").write_text(json.dumps({"method": "ptq", "target": "onnxruntime"}))
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.0}))
    return out


def test_repo_add_then_check(tmp_path: Path, quantize_output: Path) -> None:
    repo = tmp_path / "model_repository"
    result = run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository", str(repo))
    assert result.returncode == 0, result.stderr
    assert "cnn_fp32 version 1" in result.stdout and "cnn_int8 version 1" in result.stdout
    again = run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository", str(repo))
    assert "cnn_int8 version 2" in again.stdout
    check = run_cli("repo", "check", str(repo))
    assert check.returncode == 0 and check.stdout.strip() == f"{repo}: OK"


def test_repo_check_reports_problems_as_error_lines(tmp_path: Path, quantize_output: Path) -> None:
    repo = tmp_path / "repo"
    run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository", str(repo))
    (repo / "cnn_int8" / "1" / "model.onnx").unlink()
    cfg = repo / "cnn_fp32" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "\nmax_batch_sizes: 3\n")
    result = run_cli("repo", "check", str(repo))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("Error: ") for line in lines)
    assert "max_batch_sizes" in result.stderr and "cnn_int8/1/model.onnx is missing" in result.stderr


def test_repo_add_from_wrong_folder_is_one_line(tmp_path: Path) -> None:
    result = run_cli("repo", "add", "--from", str(tmp_path), "--name", "x", "--repository", str(tmp_path / "r"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not a `quantplug quantize` output folder" in result.stderr


def start_serve(repo: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`quantplug serve` in a subprocess, read up to its "Ready." line (or its exit)."""
    proc = subprocess.Popen([sys.executable, "-m", "quantplug", "serve", "--repository", str(repo), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ))
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ready."):
            break
    return proc, "".join(lines)


def test_serve_infer_and_sigterm(tmp_path: Path, quantize_output: Path) -> None:
    repo = tmp_path / "repo"
    assert run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository",
                   str(repo)).returncode == 0
    proc, text = start_serve(repo, "--grpc-port", "0")
    try:
        assert "Serving 2 model(s)" in text, text + (proc.stderr.read() if proc.poll() is not None else "")
        assert "HTTP" not in text and "metrics" not in text  # gRPC only by default
        url = re.search(r"gRPC\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        result = run_cli("infer", "--url", url, "--model", "cnn_int8", "--batch-size", "3", "--repeat", "3",
                         "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert np.asarray(data["outputs"]["logits"]).shape == (3, 10) and data["latency"]["median_ms"] > 0
        npz = tmp_path / "in.npz"
        np.savez(npz, image=DigitsWorkload().test[0][:2])
        human = run_cli("infer", "--url", url, "--model", "cnn_fp32", "--input", str(npz), "--repeat", "1")
        assert "output logits: shape [2, 10] float32" in human.stdout and "latency: median" in human.stdout
        unknown = run_cli("evaluate", "--url", url, "--model", "cnn_int8", "--workload", "no-such-workload")
        assert unknown.returncode == 2 and 'unknown workload "no-such-workload"' in unknown.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Stopped." in err
    assert processes_mentioning(str(repo)) == []


def test_infer_without_server_is_one_line() -> None:
    from quantplug.triton.server import free_port

    result = run_cli("infer", "--url", f"127.0.0.1:{free_port()}", "--model", "m")
    assert result.returncode == 2 and "no Triton server answers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_port_in_use_is_one_line(tmp_path: Path, quantize_output: Path) -> None:
    import socket

    repo = tmp_path / "repo"
    run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository", str(repo))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli("serve", "--repository", str(repo), "--grpc-port", str(port))
    assert result.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_says_what_is_exposed() -> None:
    text = " ".join(run_cli("serve", "--help").stdout.split())
    assert "gRPC only" in text and "--http" in text and "4 MB" in text
    assert "shared-memory, trace and logging APIs are restricted" in text and "--open-api" in text


def test_serve_http_port_without_http_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--repository", str(tmp_path), "--http-port", "8000")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "Error: --http-port needs --http (HTTP is off by default; the server speaks gRPC)"]


def _server_workdir(repo: Path) -> Path:
    """The work folder named on the running tritonserver's command line (--backend-directory)."""
    for pid in processes_mentioning(str(repo)):
        for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"):
            if arg.startswith("--backend-directory="):
                return Path(arg.split("=", 1)[1]).parent
    raise AssertionError("no tritonserver found")


def _wait_gone(repo: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while processes_mentioning(str(repo)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(repo)) == []


def test_serve_killed_then_restarted_on_the_same_ports(tmp_path: Path, quantize_output: Path) -> None:
    """SIGKILL leaves the work folder and HTTP's TIME-WAIT port; the next serve cleans one and reuses the other."""
    import socket
    import urllib.request

    from quantplug.triton.server import free_port

    repo = tmp_path / "repo"
    run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository", str(repo))
    ports = ["--grpc-port", str(free_port()), "--http", "--http-port", str(free_port())]
    first, text = start_serve(repo, *ports)
    try:
        assert "Ready." in text, text
        workdir = _server_workdir(repo)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[4]}/v2/health/live", timeout=10) as r:
            assert r.status == 200
        first.kill()
        first.communicate(timeout=30)
        _wait_gone(repo)  # tritonserver follows its parent (PDEATHSIG), the work folder stays
        assert workdir.is_dir()
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", int(ports[4])))  # TIME-WAIT: what the old pre-check tripped on
        second, text = start_serve(repo, *ports)
        try:
            assert "Ready." in text, text + (second.stderr.read() if second.poll() is not None else "")
            assert not workdir.exists()
            url = f"127.0.0.1:{ports[1]}"
            assert run_cli("infer", "--url", url, "--model", "cnn_int8", "--batch-size", "2").returncode == 0
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=60)
        assert f"Removed the work folder of a killed run: {workdir}" in err
        assert "Warning: HTTP is on" in err
    finally:
        first.kill()
    _wait_gone(repo)


def test_serve_reports_a_crash_with_its_signal(tmp_path: Path, quantize_output: Path) -> None:
    """--http on: one 5 MB form body crashes Triton 2.51 (the documented risk); serve says how it died."""
    from .test_triton_hardening import form_post

    repo = tmp_path / "repo"
    run_cli("repo", "add", "--from", str(quantize_output), "--name", "cnn", "--repository", str(repo))
    proc, text = start_serve(repo, "--grpc-port", "0", "--http", "--http-port", "0")
    try:
        port = int(re.search(r"HTTP\s+http://127.0.0.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        form_post(port, "/v2/models/cnn_int8/infer")
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: tritonserver ended with SIGSEGV (signal 11) while serving; its last log "
                           "lines: Signal (11) received."), err
    assert "CudaDriverHelper" not in last and "Traceback" not in err
    _wait_gone(repo)
