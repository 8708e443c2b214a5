"""`repo add` under SIGKILL: staging outside the root, pairs landed together, leftovers reported and repaired.

The kills are real: a subprocess adds models and SIGKILLs itself at an exact point (after its Nth rename
into the repository, or while staging), then the real checker, repair and tritonserver look at the result.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantplug.triton.repository import add_from_output, add_model, check_repository, model_versions
from quantplug.triton.server import TritonServer
from quantplug.triton.staging import serving_lock, staging_root

from .conftest import run_cli
from .test_triton_repository import files_under, tiny_onnx

DRIVER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from quantplug.triton import repository

    repo, src, when, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    seen = {"n": 0}
    if when == "landing":  # SIGKILL right after the count-th rename into the repository
        real_rename = os.rename
        def rename(a, b):
            real_rename(a, b)
            if Path(b).resolve().is_relative_to(repo.resolve()) or Path(a).resolve().is_relative_to(repo.resolve()):
                seen["n"] += 1
                if seen["n"] == count:
                    os.kill(os.getpid(), signal.SIGKILL)
        os.rename = rename
    else:  # SIGKILL when the count-th model starts staging
        real_stage = repository._stage_model
        def stage(*args, **kwargs):
            seen["n"] += 1
            if seen["n"] == count:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_stage(*args, **kwargs)
        repository._stage_model = stage
    if sys.argv[5] == "pair":
        repository.add_from_output(repo, src, "cnn")
    else:
        repository.replace_model(repo, "cnn_int8", src / "model.onnx")
''')


@pytest.fixture
def quantized(tmp_path: Path) -> Path:
    out = tmp_path / "quantized"
    out.mkdir()
    tiny_onnx(out / "model.onnx")
    tiny_onnx(out / "model_fp32.onnx")
    (out / "recipe.json").write_text('{"method": "ptq"}')
    return out


def killed_add(repo: Path, src: Path, when: str, count: int, what: str = "pair") -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(repo), str(src), when, str(count), what],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def versions(repo: Path) -> dict[str, list[int]]:
    return {m: model_versions(repo / m) for m in ("cnn_fp32", "cnn_int8")}


def test_staging_is_outside_the_repository_root(tmp_path: Path, quantized: Path) -> None:
    repo = tmp_path / "repo"
    add_from_output(repo, quantized, "cnn")
    killed_add(repo, quantized, "staging", 2)  # FP32 staged, killed as INT8 starts
    assert versions(repo) == {"cnn_fp32": [1], "cnn_int8": [1]}  # nothing of the killed add is visible
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]
    staged = [p for p in staging_root(repo).iterdir() if p.is_dir()]
    assert len(staged) == 1 and (staged[0] / "cnn_fp32" / "version" / "model.onnx").is_file()
    problems = check_repository(repo)
    assert len(problems) == 1 and "killed before landing (none of it is in the repository)" in problems[0]
    repaired = run_cli("repo", "check", "--repair", str(repo))
    assert repaired.returncode == 0, repaired.stderr
    assert "Repaired: removed" in repaired.stdout and repaired.stdout.strip().endswith(f"{repo}: OK")
    assert not [p for p in staging_root(repo).iterdir() if p.is_dir()]


def test_pair_killed_between_landings_is_reported_then_finished_by_serve(tmp_path: Path, quantized: Path) -> None:
    repo = tmp_path / "repo"
    add_from_output(repo, quantized, "cnn")
    killed_add(repo, quantized, "landing", 1)  # FP32's version 2 landed, INT8's not yet
    assert versions(repo) == {"cnn_fp32": [1, 2], "cnn_int8": [1]}  # the torn state, on disk
    check = run_cli("repo", "check", str(repo))
    assert check.returncode == 2
    assert ("interrupted `repo add`: cnn_int8 version 2 not landed yet (landed: cnn_fp32 version 2); the next "
            "`quantplug repo add` or `quantplug serve` finishes it") in check.stderr
    # an older quantplug's staging debris in the root: Triton tries it, serve must not count it as a model
    debris = repo / ".cnn_int8.k3j9.tmp"
    (debris / "1").mkdir(parents=True)
    (debris / "config.pbtxt").write_text((repo / "cnn_int8" / "config.pbtxt").read_text())
    with TritonServer(repo) as server:  # require_all: a failure would raise
        assert any("finished the interrupted landing of cnn_int8 version 2" in line for line in server.recovered)
        states = server.model_states()
        assert {n: st["version"] for n, st in states.items() if not n.startswith(".")} == {
            "cnn_fp32": "2", "cnn_int8": "2"}
        assert list(server.ignored_folders) == [debris.name] and server.failed_models == {}
    assert versions(repo) == {"cnn_fp32": [1, 2], "cnn_int8": [1, 2]}
    assert [p for p in check_repository(repo) if "hidden folder" in p] == [
        f"{debris}: hidden folder in the repository root; Triton tries to load it as a model (a strict start "
        "fails on it): remove it (`quantplug repo check --repair` removes the staging leftovers of older "
        "quantplug versions)"]
    assert run_cli("repo", "check", "--repair", str(repo)).returncode == 0 and not debris.exists()


def test_next_add_finishes_an_interrupted_pair_first(tmp_path: Path, quantized: Path) -> None:
    repo = tmp_path / "repo"
    killed_add(repo, quantized, "landing", 1)  # a brand-new pair: cnn_fp32 landed, cnn_int8 absent
    assert versions(repo) == {"cnn_fp32": [1], "cnn_int8": []}
    added = add_from_output(repo, quantized, "cnn")
    assert versions(repo) == {"cnn_fp32": [1, 2], "cnn_int8": [1, 2]}
    assert added == {"fp32": repo / "cnn_fp32" / "2", "int8": repo / "cnn_int8" / "2"}
    assert check_repository(repo) == []


def test_replace_killed_midway_is_put_right(tmp_path: Path, quantized: Path) -> None:
    repo = tmp_path / "repo"
    add_from_output(repo, quantized, "cnn")
    add_from_output(repo, quantized, "cnn")
    killed_add(repo, quantized, "landing", 1, what="replace")  # the old folder is aside, the new not in
    assert not (repo / "cnn_int8").exists()
    assert any("model cnn_int8 version 1 not landed yet" in p for p in check_repository(repo))
    assert run_cli("repo", "check", "--repair", str(repo)).returncode == 0
    assert versions(repo) == {"cnn_fp32": [1, 2], "cnn_int8": [1]}
    assert files_under(repo / "cnn_int8") == {"config.pbtxt", "1/model.onnx", "1/model.py"}


def test_landing_waits_while_a_server_reads_the_repository(tmp_path: Path, quantized: Path) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "m", quantized / "model.onnx")
    code = f"from quantplug.triton.repository import add_model; add_model({str(repo)!r}, 'm', {str(quantized)!r} + '/model.onnx')"
    with serving_lock(repo):
        writer = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [p for p in staging_root(repo).iterdir() if p.is_dir()]:
            time.sleep(0.1)  # the writer has staged; now it waits for the lock
        time.sleep(1.0)
        assert model_versions(repo / "m") == [1] and writer.poll() is None
    assert writer.wait(timeout=60) == 0
    assert model_versions(repo / "m") == [1, 2]
