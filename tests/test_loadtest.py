"""Load tests against the real bundled Triton with real locust: exact timings, failures, A/B pairs,
distributed mode, bounded processes and the CLI gate. Runs are a few seconds each."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from quantplug.loadtest import check_gate, run_ab, run_load, write_html, write_json, write_png
from quantplug.loadtest.runner import free_port, run_locust
from quantplug.loadtest.stats import compute_stats, median_or_none, ratio
from quantplug.loadtest.timings import read_timings
from quantplug.triton.repository import add_model
from quantplug.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[1]
DIM = 256


def _mlp_onnx(path: Path, layers: int, reshape_to_one_row: bool = False) -> Path:
    """x[batch, DIM] -> `layers` x (MatMul, Relu) -> y; optionally a Reshape to one row that fails for batch > 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    if reshape_to_one_row:
        inits.append(numpy_helper.from_array(np.array([1, DIM], dtype=np.int64), "one_row"))
        nodes.append(helper.make_node("Reshape", ["x", "one_row"], ["x1"]))
        prev = "x1"
    for i in range(layers):
        w = (rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """`slow` (12 layers), `fast` (1 layer) and `broken` (fails every request with batch > 1)."""
    work = tmp_path_factory.mktemp("loadtest-models")
    repo = work / "repo"
    add_model(repo, "slow", _mlp_onnx(work / "slow.onnx", 12), max_batch_size=16)
    add_model(repo, "fast", _mlp_onnx(work / "fast.onnx", 1), max_batch_size=16)
    add_model(repo, "broken", _mlp_onnx(work / "broken.onnx", 1, reshape_to_one_row=True), max_batch_size=16)
    with TritonServer(repo) as s:
        yield s


def _locust_children() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "locust" in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture(autouse=True)
def no_locust_left() -> Iterator[None]:
    yield
    assert _locust_children() == [], "a locust process outlived its run"


def _locust_aggregated_count(log: Path) -> int:
    """The request count in locust's own final summary (its 'Aggregated' row)."""
    rows = [ln for ln in log.read_text().splitlines() if ln.strip().startswith("Aggregated")]
    return int(rows[0].split()[1])


def test_headless_run_exact_percentiles(server: TritonServer, tmp_path: Path) -> None:
    stats = run_load(server.grpc_url, "fast", users=2, duration_s=3, batch_size=4, folder=tmp_path)
    assert stats.requests > 0 and stats.failures == 0
    assert stats.p50_ms is not None and stats.p95_ms is not None and stats.p99_ms is not None
    assert 0 < stats.p50_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms  # type: ignore[operator]
    assert stats.throughput_ips == pytest.approx(stats.throughput_rps * 4, rel=1e-3)
    timings = read_timings(tmp_path / "run-1")
    assert timings.done is not None and timings.done["stopped"] - timings.done["started"] >= 2.9  # ran its duration
    # exact: sub-millisecond resolution (locust itself rounds these to whole ms)
    assert np.any(np.abs(timings.ms - np.round(timings.ms)) > 1e-3)
    assert float(np.percentile(timings.ms[timings.ok], 50)) == pytest.approx(stats.p50_ms, abs=1e-3)
    # nothing dropped: every request locust counted is in the exact timings
    assert _locust_aggregated_count(tmp_path / "run-1" / "locust.log") == stats.requests == len(timings)


def test_failures_are_counted_and_fail_the_gate(server: TritonServer, tmp_path: Path) -> None:
    result = run_ab(server.grpc_url, "fast", "broken", pairs=1, users=2, duration_s=2, batch_size=4,
                    min_speedup=0.01, progress=False)
    cand = result["candidate"]
    assert cand["requests"] > 0 and cand["failures"] == cand["requests"]
    assert cand["p50_ms"] is None and cand["throughput_rps"] == 0
    assert any("Reshape" in e or "reshape" in e for e in cand["errors"])
    assert result["baseline"]["failures"] == 0 and result["failures"] == cand["failures"]
    assert result["gate"]["passed"] is False and "failed requests" in result["gate"]["reason"]
    assert check_gate(result, None)[0] is False  # failures fail the gate even without --min-speedup
    assert write_png(tmp_path / "failed.png", result).stat().st_size > 1000  # charts runs without latencies


def test_run_ab_alternates_and_computes_ratios_per_pair(server: TritonServer, tmp_path: Path) -> None:
    seen: list[int] = []
    result = run_ab(server.grpc_url, "slow", "fast", pairs=2, users=2, duration_s=2, batch_size=8,
                    progress=False, on_pair=lambda p: seen.append(p["pair"]))
    assert seen == [1, 2]
    pairs = result["pairs"]
    assert [p["order"] for p in pairs] == [["baseline", "candidate"]] * 2
    assert [(p["baseline"]["run"], p["candidate"]["run"]) for p in pairs] == [(1, 2), (3, 4)]  # A B A B
    for p in pairs:
        assert p["baseline"]["model"] == "slow" and p["candidate"]["model"] == "fast"
        assert p["speedup_throughput"] == ratio(p["candidate"]["throughput_rps"], p["baseline"]["throughput_rps"])
        assert p["speedup_p50"] == ratio(p["baseline"]["p50_ms"], p["candidate"]["p50_ms"])
    assert result["speedup_throughput"] == median_or_none([p["speedup_throughput"] for p in pairs])
    assert result["speedup_p50"] == median_or_none([p["speedup_p50"] for p in pairs])
    for role in ("baseline", "candidate"):
        pooled = result[role]
        assert set(pooled) >= {"model", "requests", "failures", "throughput_rps", "p50_ms", "p95_ms", "p99_ms"}
        assert pooled["requests"] == sum(p[role]["requests"] for p in pairs) > 0
        assert pooled["p50_ms"] <= pooled["p95_ms"] <= pooled["p99_ms"]
    assert result["machine"]["cpu_model"] and result["machine"]["logical_cores"] >= 1
    assert result["settings"]["pairs"] == 2 and result["settings"]["batch_size"] == 8
    assert result["settings"]["models"]["baseline"]["inputs"] == [
        {"name": "x", "shape": [8, DIM], "datatype": "FP32"}]
    assert result["gate"]["passed"] is True  # no failures, no --min-speedup

    json_path = write_json(tmp_path / "ab.json", result)
    assert json.loads(json_path.read_text())["pairs"][1]["candidate"]["run"] == 4
    assert write_png(tmp_path / "ab.png", result).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = write_html(tmp_path / "ab.html", result).read_text()
    assert "data:image/png;base64," in page and "slow" in page and "pair 2" in page


def test_distributed_master_and_two_workers(server: TritonServer, tmp_path: Path) -> None:
    stats = run_load(server.grpc_url, "fast", users=2, duration_s=3, batch_size=2, workers=2, folder=tmp_path)
    assert stats.requests > 0 and stats.failures == 0 and stats.workers == 2
    # the only acceptable notes: a process that hung at exit after writing its complete results, ended by its
    # own watchdog, or (a worker stuck before locust's quitting event, so no watchdog) by the runner's kill
    assert all("exit watchdog ended it" in n or "wrote its complete results, then did not exit" in n
               for n in stats.notes), stats.notes
    done = read_timings(tmp_path / "run-1").done
    assert done is not None and done["workers"] == 2 and done["workers_final"] == 2
    logs = sorted(p.name for p in (tmp_path / "run-1").glob("*.log"))
    assert logs == ["master.log", "worker0.log", "worker1.log"]
    assert _locust_aggregated_count(tmp_path / "run-1" / "master.log") == stats.requests


HANGING_LOCUSTFILE = '''
import signal
import time

from locust import events

from quantplug.loadtest.grpc_user import TritonGrpcUser  # noqa: F401  (its listeners come first)


@events.test_stop.add_listener
def _hang_after_results(**kwargs):  # results written, then stuck for good, deaf to SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
'''


def test_hung_locust_is_killed_and_results_kept(server: TritonServer, tmp_path: Path) -> None:
    locustfile = tmp_path / "hanging_locustfile.py"
    locustfile.write_text(HANGING_LOCUSTFILE)
    run = run_locust(tmp_path / "run", server.grpc_url, "fast", users=1, spawn_rate=1, duration_s=2,
                     batch_size=1, locustfile=locustfile, exit_grace_s=3)
    assert run.killed and run.hung_after_done
    assert any("SIGKILL" in n for n in run.notes)
    timings = read_timings(run.folder)
    assert timings.done is not None and len(timings) == timings.done["records"] > 0
    stats = compute_stats(timings, "fast", batch_size=1, users=1, workers=0)
    assert stats.requests > 0 and stats.failures == 0


HANGING_AT_EXIT_LOCUSTFILE = '''
import signal
import time

from locust import events

from quantplug.loadtest.grpc_user import TritonGrpcUser  # noqa: F401  (its listeners come first)


@events.quit.add_listener
def _hang_at_exit(**kwargs):  # the hang seen with tritonclient: summary printed, then stuck at exit
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
'''


def test_hang_at_exit_is_ended_by_the_users_watchdog(server: TritonServer, tmp_path: Path) -> None:
    locustfile = tmp_path / "hanging_at_exit_locustfile.py"
    locustfile.write_text(HANGING_AT_EXIT_LOCUSTFILE)
    run = run_locust(tmp_path / "run", server.grpc_url, "fast", users=1, spawn_rate=1, duration_s=2,
                     batch_size=1, locustfile=locustfile)
    assert not run.killed and run.returncodes == [0]
    assert run.notes == ["locust locust hung at exit after writing its results; its exit watchdog ended it"]
    assert "forcing exit code 0" in run.log_tail
    assert read_timings(run.folder).done is not None


def test_locustfile_usable_directly(server: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "timings"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "triton_grpc.py"), "--headless",
         "--host", server.grpc_url, "-u", "2", "-r", "2", "-t", "2s", "--only-summary", "--model", "fast",
         "--batch-size", "2", "--timings-dir", str(out)],
        capture_output=True, text=True, timeout=60, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r"exact timings: (\d+) requests, 0 failures, p50 ([\d.]+) ms", proc.stderr)
    assert match and int(match.group(1)) > 0
    done = read_timings(out).done
    assert done is not None and len(read_timings(out)) == int(match.group(1))
    assert done["stopped"] - done["started"] >= 1.9  # locust's -t timer did not fire early


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantplug", "loadtest", "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_cli_exit_code_follows_min_speedup(server: TritonServer, tmp_path: Path) -> None:
    common = ["--url", server.grpc_url, "--baseline", "slow", "--candidate", "fast", "--pairs", "1",
              "--duration", "2", "--batch-size", "4"]
    ok = _cli(*common, "--min-speedup", "0.01", "--json", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "pair 1 (order: baseline then candidate)" in ok.stdout and "gate: PASS" in ok.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["gate"] == {"min_speedup": 0.01, "passed": True, "reason": result["gate"]["reason"]}
    assert (tmp_path / "r.png").stat().st_size > 1000

    low = _cli(*common, "--min-speedup", "1000", "--workers", "1")  # distributed through the CLI too
    assert low.returncode == 1, low.stdout + low.stderr
    assert "1 workers" in low.stdout
    assert "gate: FAIL" in low.stdout and low.stderr.strip().splitlines()[-1].startswith("Error: gate failed")


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "127.0.0.1:{free}"], "cannot reach Triton at 127.0.0.1:"),
    (["--baseline", "nope"], "model 'nope' is not ready"),
    (["--users", "0"], "bad users 0"),
    (["--duration", "-3"], "bad duration"),
    (["--batch-size", "64"], "exceeds model 'slow''s max_batch_size 16"),
    (["--url", "no-port"], "bad --url 'no-port'"),
])
def test_cli_one_line_errors(server: TritonServer, args: list[str], message: str) -> None:
    given = dict(zip(args[::2], args[1::2], strict=True))
    options = {"--url": server.grpc_url, "--baseline": "slow", "--candidate": "fast", **given}
    options["--url"] = options["--url"].replace("{free}", str(free_port()))
    proc = _cli(*[x for kv in options.items() for x in kv], timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], proc.stderr
    assert proc.stdout == ""


def test_locust_missing_is_one_clear_error(server: TritonServer) -> None:
    """The real CLI in a Python where locust cannot be imported (blocked in sys.modules)."""
    code = ("import sys; sys.modules['locust'] = None\n"
            "from quantplug.cli import main\n"
            f"main(['loadtest', '--url', '{server.grpc_url}', '--baseline', 'slow', '--candidate', 'fast', "
            "'--no-progress', '--pairs', '1', '--duration', '1'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"Error: locust is not installed in {sys.executable}: pip install locust"]


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid():
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_signal_stops_the_whole_run_and_keeps_finished_pairs(server: TritonServer, tmp_path: Path,
                                                                 sig: signal.Signals) -> None:
    """The signal goes to the command's process only (locust runs in its own sessions). SIGINT starts out
    ignored, as in a shell's background job: the command still stops on it."""
    tmp = tmp_path / "tmp"  # the run's temp folders go here (TMPDIR)
    tmp.mkdir()
    out = tmp_path / "partial.json"
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sig == signal.SIGINT else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantplug", "loadtest", "--no-progress", "--url", server.grpc_url, "--baseline",
         "slow", "--candidate", "fast", "--pairs", "3", "--duration", "2", "--batch-size", "2", "--workers", "1",
         "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=ignore_sigint,
        env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait for the first pair's table, then for its second pair to be loading
        lines.append(line)
        if line.startswith("speed-up:"):
            break
    deadline = time.monotonic() + 30
    while not _processes_mentioning(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(tmp)), "no locust process of pair 2 seen"
    t0 = time.monotonic()
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 128 + sig, "".join(lines) + rest + err
    assert took < 15, f"took {took:.1f} s to stop"
    assert _processes_mentioning(str(tmp)) == [] and list(tmp.iterdir()) == []  # no locust, no temp folder
    assert err.strip().splitlines()[-1] == (f"Error: interrupted by {sig.name} after 1 of 3 pairs; every locust "
                                            "process was ended")
    result = json.loads(out.read_text())
    assert result["interrupted"] is True and result["interrupted_by"] == sig.name
    assert [p["pair"] for p in result["pairs"]] == [1]
    assert result["baseline"]["requests"] == result["pairs"][0]["baseline"]["requests"] > 0
    assert result["gate"]["passed"] is False and "after 1 of 3 pairs" in result["gate"]["reason"]
    assert "summary over 1 of 3 pairs (interrupted)" in rest
