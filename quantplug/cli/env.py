"""``quantplug env``: a copy-paste bug report of versions, CPU features and accelerators."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

_PACKAGES = ("quantplug", "torch", "onnx", "onnxruntime", "tritonclient", "nvidia-pytriton", "pluggy", "locust",
             "grpcio", "numpy", "tensorrt")


def dist_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``"not installed"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_info() -> dict[str, Any]:
    """This machine's CPU (quantplug.cpu): model, cores, INT8 flags, ISA class and the scheme it needs."""
    from ..cpu import describe_scheme_need, detect_cpu

    info = detect_cpu()
    return {**info.to_dict(), "onnxruntime_scheme": describe_scheme_need(info)}


def triton_binary() -> str:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return "not found (pip install nvidia-pytriton)"
    binary = Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"
    return str(binary) if binary.exists() else f"missing at {binary}"


def gpu_info() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "none (no nvidia-smi)"
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or out.stderr.strip() or "none"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


def collect() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: dist_version(p) for p in _PACKAGES},
        "triton_binary": triton_binary(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("QUANTPLUG_")},
    }


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of Markdown.")
def command(as_json: bool) -> None:
    """Print versions, CPU INT8 features and GPUs: paste it into a bug report."""
    info = collect()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo("### quantplug environment\n")
    click.echo(f"- Python: {info['python']} ({info['platform']})")
    for name, version in info["packages"].items():
        click.echo(f"- {name}: {version}")
    click.echo(f"- Triton binary: {info['triton_binary']}")
    cpu = info["cpu"]
    click.echo(f"- CPU: {cpu['model']}, {cpu['cores']} cores, INT8 features: {', '.join(cpu['int8_flags']) or 'none'}")
    click.echo(f"- ONNX Runtime INT8 scheme for this CPU: {cpu['onnxruntime_scheme']}")
    click.echo(f"- GPU: {info['gpu']}")
    for k, v in info["env"].items():
        click.echo(f"- {k}={v}")
