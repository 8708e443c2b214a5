"""The main job end to end on a small configuration: real training, engine, Triton, gRPC and locust."""

from __future__ import annotations

import json

import psutil
import pytest

from quantplug.demo import DemoConfig, run_demo
from quantplug.triton.repository import check_repository


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTPLUG_LOAD_PLUGINS", "")
    cfg = DemoConfig(
        output=tmp_path / "out", repository=tmp_path / "repo", workload="mnist-cnn", model_prefix="mnist_cnn",
        seeds=1, qat_epochs=1, int4_qat_epochs=1, calib_batches=8, pairs=1, duration_s=2.0,
        short_duration_s=1.5, progress=False,
        rows=[{"label": "ptq", "method": "ptq", "calibrator": "max"},
              {"label": "dynamic", "method": "dynamic", "calibrator": "max"}],
    )
    report = run_demo(cfg)

    saved = json.loads((cfg.output / "report.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))
    assert {"accuracy", "size_bytes"} <= set(saved["fp32"])
    for row in saved["rows"]:
        for key in ("method", "calibrator", "weight_bits", "activation_bits", "target", "accuracy",
                    "accuracy_served", "accuracy_drop_pts", "size_ratio", "speedup", "quantize_seconds"):
            assert key in row, key
        # Served accuracy is measured over gRPC and must agree with ONNX Runtime in-process.
        assert abs(row["accuracy_served"] - row["accuracy"]) < 1e-9
        assert row["accuracy_drop_pts"] == pytest.approx(saved["fp32"]["accuracy"] - row["accuracy_served"])
        assert row["speedup"] > 0 and row["loadtest_failures"] == 0
        assert 0.2 < row["size_ratio"] < 0.5
    lt = saved["loadtest"]["runs"][saved["loadtest"]["best"]]
    assert lt["speedup_throughput"] == pytest.approx(lt["pairs"][0]["speedup_throughput"])
    assert lt["baseline"]["requests"] > 0 and lt["candidate"]["requests"] > 0
    assert [r["method"] for r in saved["int4"]["rows"]] == ["ptq", "qat", "qad"]
    assert all(r["speedup"].startswith("n/a") for r in saved["int4"]["rows"])
    assert (cfg.output / "report.png").stat().st_size > 10_000
    assert "| method" in (cfg.output / "report.md").read_text()
    # The repository stays populated and valid for `quantplug serve`; the server is gone.
    assert check_repository(cfg.repository) == []
    assert sorted(p.name for p in cfg.repository.iterdir()) == ["mnist_cnn_dynamic", "mnist_cnn_fp32", "mnist_cnn_ptq"]
    # Other Triton servers may run on this machine (parallel tests): only ours must be gone.
    ours = str(cfg.repository)
    leftovers = [p.info["name"] for p in psutil.process_iter(["name", "cmdline"])
                 if any(ours in arg for arg in (p.info["cmdline"] or []))]
    assert leftovers == []
