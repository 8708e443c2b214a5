"""`quantplug sensitivity`: per-layer drops on the real mnist-cnn, a PNG bar chart and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_cli


def test_cli_writes_png_and_json_with_real_layer_names(tmp_path: Path) -> None:
    png, js = tmp_path / "sens.png", tmp_path / "sens.json"
    result = run_cli("sensitivity", "--workload", "mnist-cnn", "--weight-bits", "4", "--calib-batches", "2",
                     "--val-size", "200", "--output", str(png), "--json", str(js), "--quiet")
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    data = json.loads(js.read_text())
    assert data["workload"] == "mnist-cnn" and data["weight_bits"] == 4 and data["val_rows"] == 200

    from quantplug.registry import build_registry

    model = build_registry().workload("mnist-cnn").build_model(progress=False)
    names = {n for n, _ in model.named_modules()}
    layers = data["layers"]
    assert len(layers) >= 3 and {row["layer"] for row in layers} <= names
    assert all(row["bits"] == 4 and row["kind"] in ("Conv2d", "Linear") for row in layers)
    drops = [(row["drop"], row["output_error"]) for row in layers]
    assert drops == sorted(drops, reverse=True)  # most sensitive first
    for row in layers:  # the table lists every layer with its drop
        assert row["layer"] in result.stdout
    assert all(row["drop"] == data["fp_score"] - row["score"] for row in layers)


def test_unknown_calibrator_is_one_line_error(tmp_path: Path) -> None:
    result = run_cli("sensitivity", "--workload", "mnist-cnn", "--calibrator", "nope", "--output",
                     str(tmp_path / "x.png"), "--quiet")
    assert result.returncode == 2 and result.stderr.startswith("Error: ") and "nope" in result.stderr
    assert not (tmp_path / "x.png").exists()
