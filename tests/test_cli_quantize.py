"""`quantplug quantize` end to end on a user model (real export, real ONNX Runtime), and its bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QUANTPLUG_LOAD_PLUGINS": ""}
    return subprocess.run([sys.executable, "-m", "quantplug", "quantize", *args, "--quiet"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_user_model_quantizes_into_a_complete_directory(tmp_path: Path) -> None:
    from tests.quant_models import build

    weights = tmp_path / "w.pt"
    torch.save(build().state_dict(), weights)
    out = tmp_path / "out"
    r = _cli("--model", "tests.quant_models:build", "--weights", str(weights), "--data", "tests.quant_models:make_data",
             "--calib-batches", "6", "--lr-scale", "0.5", "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model_fp32.onnx", "recipe.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fp32"]["torch"]["accuracy"] == 100.0  # the test labels are the FP32 model's predictions
    assert metrics["quantized"]["onnxruntime"] == metrics["quantized"]["torch"]
    assert metrics["onnxruntime_vs_torch_max_abs_diff"] < 1e-3
    assert set(metrics["stages"]) >= {"prepare", "method", "export", "evaluate"}
    recipe = json.loads((out / "recipe.json").read_text())
    assert (recipe["calib_batches"], recipe["lr_scale"]) == (6, 0.5)
    assert "fewer than the 500 recommended" in r.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "magic"], 'unknown method "magic"; valid: dynamic, ptq, qad, qat'),
        (["--calibrator", "nope"], 'unknown calibrator "nope"'),
        (["--target", "tpu"], 'unknown backend "tpu"'),
        (["--weight-bits", "3"], "weight_bits=3 is not supported; use --weight-bits 4 or 8"),
        (["--model", "tests.no_such_module:build"], "cannot import 'tests.no_such_module'"),
        (["--data", "tests.quant_models:make_empty_data"], "calibration set is empty"),
        (["--data", "tests.quant_models:make_wrong_shape_data"], "the data must yield batches shaped like"),
        (["--weights", "BADWEIGHTS"], "do not match model"),
        (["--lr-scale", "3"], "lr_scale=3.0 must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    base = {"--model": "tests.quant_models:build", "--data": "tests.quant_models:make_data"}
    extra: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if value == "BADWEIGHTS":
            value = str(tmp_path / "bad.pt")
            torch.save({"fc.weight": torch.zeros(3, 3)}, value)
        if flag in base:
            base[flag] = value
        else:
            extra += [flag, value]
    flat = [x for kv in base.items() for x in kv]
    out = tmp_path / "out"
    r = _cli(*flat, *extra, "--output", str(out), cwd=tmp_path)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
