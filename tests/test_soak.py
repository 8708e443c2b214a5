"""The soak command, briefly (`make soak` runs it for 10 minutes): real Triton, real locust, hostile requests."""

from __future__ import annotations

import json
from pathlib import Path

from quantplug.loadtest.soak import MALFORMED_KINDS

from .conftest import run_cli
from .test_triton_repository import tiny_onnx


def test_short_soak_reports_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    result = run_cli("soak", "--onnx", str(tiny_onnx(tmp_path / "tiny.onnx")), "--minutes", "0.15",
                     "--batch-size", "2", "--malformed-interval", "0.5", "--output", str(out), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((out / "soak.json").read_text())
    soak = data["soak"]
    assert soak["passed"] and soak["server_alive_at_end"] and soak["good_failures"] == 0
    assert soak["good_requests"] > 100
    assert set(soak["malformed_by_kind"]) == set(MALFORMED_KINDS) and soak["malformed_accepted"] == {}
    assert soak["first_window"]["p99_ms"] > 0 and soak["last_window"]["p99_ms"] > 0
    assert soak["rss"]["server"]["first_window_mib"] > 0 and soak["rss"]["stubs"]["last_window_mib"] > 0
    md = (out / "soak.md").read_text()
    assert "| failures of good requests | 0 |" in md and "Result: PASS" in md
