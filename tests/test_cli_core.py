from __future__ import annotations

import json

import quantplug

from .conftest import run_cli


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and quantplug.__version__ in result.stdout


def test_env_report_json():
    result = run_cli("env", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["packages"]["torch"].startswith("2.")
    assert info["packages"]["onnxruntime"] != "not installed"
    assert info["triton_binary"].endswith("tritonserver")
    assert info["cpu"]["cores"] >= 1 and isinstance(info["cpu"]["int8_flags"], list)


def test_env_report_markdown():
    result = run_cli("env")
    assert result.returncode == 0
    assert result.stdout.startswith("### quantplug environment") and "- Triton binary:" in result.stdout


def test_quantplug_error_is_one_line_without_traceback():
    result = run_cli("plugins", env={"QUANTPLUG_LOAD_PLUGINS": "does-not-exist"})
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unknown_command_exits_nonzero():
    result = run_cli("frobnicate")
    assert result.returncode != 0 and "frobnicate" in result.stderr
