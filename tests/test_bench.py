"""``quantplug bench``: the whole flow on resnet18 with --quick (real ONNX Runtime, real Triton, real
locust), then the JSON checked against the numbers it was computed from; targets and bad input."""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from quantplug.bench import SCHEMA, BenchConfig, evaluate_targets, format_markdown
from quantplug.errors import ConfigError

from .conftest import run_cli


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "results"
    proc = run_cli("bench", "--workloads", "resnet18", "--quick", "--output", str(out), "--no-progress",
                   timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "bench.json").read_text()), proc.stdout


def _at(data: dict[str, Any], dotted: str) -> Any:
    cur: Any = data
    for key in dotted.split("."):
        cur = cur[key]
    return cur


@pytest.mark.slow
def test_quick_bench_json_schema(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    out, data, _ = quick_run
    assert data["schema"] == SCHEMA and data["status"] == "complete"
    start, end = datetime.fromisoformat(data["started_at"]), datetime.fromisoformat(data["finished_at"])
    assert start <= end and data["wall_s"] > 0
    s = data["settings"]
    assert s["quick"] is True and s["pairs"] == 1 and s["batch"] == 8 and s["workloads"] == ["resnet18"]
    m = data["machine"]
    assert m["cpu_model"] and m["logical_cores"] >= 1 and len(m["loadavg_at_start"]) == 3
    assert len(m["loadavg_at_end"]) == 3
    assert list(data["workloads"]) == ["resnet18"]
    w = data["workloads"]["resnet18"]
    assert set(w["models"]) == {"fp32", "int8", "peer"}
    for key, det in w["models"].items():
        assert Path(det["path"]).is_file(), key
    assert w["models"]["int8"]["method"] == "ptq" and w["models"]["int8"]["calibrator"] == "percentile"
    peer = w["models"]["peer"]["settings"]
    assert (peer["activation_type"], peer["weight_type"], peer["per_channel"]) == ("QUInt8", "QInt8", True)
    # INT8 weights: about a quarter of FP32, for ours and the peer alike
    assert 0.2 < w["models"]["int8"]["size_ratio"] < 0.3 and 0.2 < w["models"]["peer"]["size_ratio"] < 0.3
    assert set(w["in_process"]) == {"batch_8", "batch_1"}
    served = w["served"]
    assert set(served["ab"]) == {"int8", "peer"} and served["batch"] == 8
    assert served["threads"] == w["in_process"]["batch_8"]["threads"]  # same threads served and in-process
    for ab in served["ab"].values():
        assert ab["failures"] == 0 and ab["baseline"]["requests"] > 0 and ab["candidate"]["requests"] > 0
        assert len(ab["pairs"]) == 1 and ab["pairs"][0]["order"] == ["baseline", "candidate"]
    # The served models really exist in the repository the bench wrote.
    for name in served["models"].values():
        assert (out / "model_repository" / name / "config.pbtxt").is_file()
    q = w["quality"]
    assert q["metric"] == "accuracy" and q["test_size"] == 32
    assert q["scores"]["fp32"]["accuracy"] >= 95  # FP32 in ONNX Runtime agrees with FP32 PyTorch
    assert {t["workload"] for t in data["targets"]} == {"resnet18"} and len(data["targets"]) == 3


@pytest.mark.slow
def test_quick_bench_ratios_come_from_the_measured_numbers(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = quick_run
    w = data["workloads"]["resnet18"]
    for b in (8, 1):
        ip = w["in_process"][f"batch_{b}"]
        rounds = ip["rounds_ms"]
        for key in ("int8", "peer"):
            per_round = [f / c for f, c in zip(rounds["fp32"], rounds[key], strict=True)]
            assert ip["speedup_vs_fp32"][key] == pytest.approx(statistics.median(per_round), rel=1e-9)
        vs_peer = [p / c for p, c in zip(rounds["peer"], rounds["int8"], strict=True)]
        assert ip["speedup_vs_peer"]["int8"] == pytest.approx(statistics.median(vs_peer), rel=1e-9)
        for key, ms in ip["medians_ms"].items():
            assert ms == pytest.approx(statistics.median(rounds[key]))
            assert ip["throughput_ips"][key] == pytest.approx(b * 1000.0 / ms)
    served = w["served"]
    for key, ab in served["ab"].items():
        pairs = [p["candidate"]["throughput_rps"] / p["baseline"]["throughput_rps"] for p in ab["pairs"]]
        assert served["speedup_vs_fp32"][key] == pytest.approx(statistics.median(pairs), abs=1e-3)
        assert served["throughput_ips"][key] == ab["candidate"]["throughput_ips"]
        assert ab["candidate"]["throughput_ips"] == pytest.approx(ab["candidate"]["throughput_rps"] * 8, rel=1e-3)
    for key, probes in served["efficiency_pairs"].items():  # served / in-process, measured pair by pair
        ab_pairs = served["ab"][key]["pairs"]
        assert [p["pair"] for p in probes] == [p["pair"] for p in ab_pairs]
        for probe, pair in zip(probes, ab_pairs, strict=True):
            assert probe["served_ips"] == pair["candidate"]["throughput_ips"]
            assert probe["in_process_ips"] == pytest.approx(8 * 1000.0 / probe["in_process_ms"])
            assert probe["efficiency"] == pytest.approx(probe["served_ips"] / probe["in_process_ips"])
        assert w["efficiency"][key] == pytest.approx(statistics.median(p["efficiency"] for p in probes))
    in_int8 = 8 * 1000.0 / w["in_process"]["batch_8"]["medians_ms"]["int8"]
    assert w["efficiency_unpaired"]["int8"] == pytest.approx(served["throughput_ips"]["int8"] / in_int8)
    for t in data["targets"]:  # each target's value is the number at its source, judged against its threshold
        assert t["measured"] == pytest.approx(_at(data, t["source"]))
        assert t["met"] == (t["measured"] >= t["threshold"])


@pytest.mark.slow
def test_quick_bench_markdown_and_cleanup(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    out, data, stdout = quick_run
    md = (out / "bench.md").read_text()
    assert md == format_markdown(data)
    assert "## Targets" in stdout and md.strip() in stdout  # the table is printed
    assert data["machine"]["cpu_model"] in md
    for t in data["targets"]:
        value = f"{t['measured']:.2f}x" if t["unit"] == "x" else f"{t['measured']:.1%}"
        line = next(ln for ln in md.splitlines() if t["target"] in ln)
        assert value in line and ("| met" in line) == t["met"] and ("NOT MET" in line) == (not t["met"])
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".bench*"))  # nothing half-written
    leftovers = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                 if any(str(out) in part for part in (p.info["cmdline"] or []))]
    assert leftovers == []  # Triton and locust ended with the command


def test_targets_are_judged_on_the_values_given() -> None:
    results = {
        "resnet18": {"models": {"fp32": {}, "int8": {}, "peer": {}},
                     "served": {"speedup_vs_fp32": {"int8": 2.9},
                                "ab": {"int8": {"pairs": [{"speedup_throughput": x} for x in (2.7, 3.1, 2.9)]}}},
                     "efficiency": {"int8": 0.95},
                     "in_process": {"batch_8": {"speedup_vs_peer": {"int8": 1.02}}}},
        "minilm": {"models": {"fp32": {}, "int8": {}, "int8_dynamic": {}, "peer": {}},
                   "served": {"speedup_vs_fp32": {"int8": 1.4, "int8_dynamic": 2.6}},
                   "efficiency": {}, "in_process": {"batch_8": {"speedup_vs_peer": {"int8": 0.8},
                                                                "rounds_ms": {"int8": [10.0, 12.0], "peer": [8.0, 9.0]}}}},
    }
    targets = {(t["workload"], t["target"].split(" (")[0]): t for t in evaluate_targets(results, 8)}
    r18 = targets[("resnet18", "served INT8 / FP32 throughput >= 3.0x")]
    assert (r18["measured"], r18["met"]) == (2.9, False)
    assert r18["spread"] == [2.7, 3.1] and r18["within_noise"] is True  # one pair reached it: said, not rounded up
    slower = targets[("minilm", "our INT8 no slower than the peer")]
    assert slower["spread"] == pytest.approx([0.75, 0.8]) and slower["within_noise"] is False
    assert targets[("resnet18", "served INT8 >= 90% of in-process INT8")]["met"] is True
    assert targets[("resnet18", "our INT8 no slower than the peer")]["met"] is True
    assert targets[("minilm", "served INT8 / FP32 throughput >= 2.5x")]["met"] is False
    assert targets[("minilm", "served INT8 dynamic / FP32 throughput >= 2.5x")]["met"] is True
    eff = targets[("minilm", "served INT8 >= 90% of in-process INT8")]
    assert eff["measured"] is None and eff["met"] is None  # not measured is said, never guessed
    data = {"settings": {"batch": 8, "threads": 2, "users": 2, "pairs": 3, "duration_s": 15.0},
            "machine": {"cpu_model": "cpu"}, "workloads": {"resnet18": {"error": "boom"}},
            "targets": list(targets.values())}
    md = format_markdown(data)
    assert "FAILED: boom" in md and "2.90x" in md and "NOT MET" in md and "not measured" in md
    assert "2.70x to 3.10x" in md and "NOT MET (within noise)" in md


@pytest.mark.parametrize("kwargs", [{"pairs": 0}, {"batch": 0}, {"workloads": ()},
                                    {"workloads": ("resnet18", "resnet18")}, {"duration_s": 0.5},
                                    {"duration_s": 5.0, "warmup_s": 5.0}, {"test_limit": 1}])
def test_bad_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BenchConfig(**kwargs)


def test_unknown_workload_fails_in_one_line_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = run_cli("bench", "--workloads", "resnet18,nope", "--output", str(out), "--no-progress", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "nope" in lines[0]
    assert not out.exists()


def test_unknown_calibrator_fails_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("bench", "--workloads", "resnet18", "--calibrator", "nope", "--output", str(tmp_path / "r"),
                   "--no-progress", timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("Error:") and "nope" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_auto_calibrator_one_pass_best_on_validation(tmp_path: Path) -> None:
    """``auto``: every registered calibrator scored on training-split validation data; the best one is
    exported in the ``quantize --output`` layout and the peer is calibrated on the same batches."""
    import numpy as np

    from quantplug.bench.config import Variant
    from quantplug.bench.models import build_models, calibration_feeds
    from quantplug.pipeline import predict_onnx
    from quantplug.recipe import QuantRecipe
    from quantplug.registry import build_registry

    registry = build_registry()
    workload = registry.workload("mnist-cnn")
    cfg = BenchConfig(output=tmp_path, calib_batches=4, calib_batch_size=8, select_batches=2, progress=False)
    steps: list[str] = []
    built = build_models(cfg, workload, [Variant("int8", "ptq", "auto", "INT8 static PTQ")], registry,
                         tmp_path / "models", step=steps.append)
    sel = built.calibrator_selection
    assert sel is not None and set(sel["scores"]) == set(registry.names("calibrators"))
    assert sel["chosen"] == max(sel["scores"], key=lambda n: sel["scores"][n])
    folder = tmp_path / "models" / "int8"
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "model_fp32.onnx", "recipe.json", "metrics.json"}
    assert QuantRecipe.load(folder / "recipe.json").calibrator == sel["chosen"]
    assert built.details["int8"]["calibrator"] == sel["chosen"]
    assert set(built.paths) == {"fp32", "int8", "peer"} and built.paths["peer"].is_file()
    inputs, labels = workload.test_set()
    x = {k: v[:64] for k, v in inputs.items()}
    for key in ("int8", "peer"):  # both INT8 models still classify real digits like the FP32 one
        agree = np.mean(predict_onnx(built.paths[key], x).argmax(1) == predict_onnx(built.paths["fp32"], x).argmax(1))
        assert agree > 0.9, key
    feeds = calibration_feeds(workload, QuantRecipe(calib_batches=4, calib_batch_size=8))
    assert len(feeds) == 4 and all(f[workload.input_names[0]].shape[0] == 8 for f in feeds)
    assert steps[0] == "FP32 model" and steps[-1].startswith("peer")
