"""The serving CPU against what each model was made for (see :mod:`quantplug.cpu`).

``repo add`` copies an ONNX file's ``quantplug.*`` metadata (:mod:`quantplug.export.metadata`) into the
Triton config's parameters (``quantplug_scheme``, ``quantplug_cpu``, ``quantplug_weight_qmax``), so a
repository says what each model needs; ``repo add`` and ``serve`` warn in one line when a model with
full-range 8-bit weights (made for a VNNI/AMX CPU) is about to run on a CPU whose integer kernels
saturate.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["record_scheme", "repository_cpu_warnings"]

_PARAMS = ("scheme", "cpu", "weight_qmax")


def record_scheme(config: Any, onnx_path: str | Path, *, runs_here: bool) -> str | None:
    """Copy the model's scheme metadata into ``config.parameters``; warn (and return the warning) when
    ``runs_here`` and it would saturate on this CPU."""
    from ..cpu import detect_cpu
    from ..export.metadata import cpu_mismatch, read_metadata

    meta = read_metadata(onnx_path)
    for key in _PARAMS:
        if meta.get(key):
            config.parameters[f"quantplug_{key}"].string_value = meta[key]
    if not runs_here or not meta.get("weight_qmax"):
        return None
    problem = cpu_mismatch(meta.get("cpu"), int(meta["weight_qmax"]), detect_cpu().isa)
    if problem is None:
        return None
    message = f"model {config.name!r} was {problem}"
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


def repository_cpu_warnings(repo: str | Path) -> list[str]:
    """One line per model in ``repo`` whose recorded weight range saturates on this CPU."""
    from ..cpu import detect_cpu
    from ..export.metadata import cpu_mismatch
    from .config import load_config

    out = []
    isa = detect_cpu().isa
    for cfg_path in sorted(Path(repo).glob("*/config.pbtxt")):
        if cfg_path.parent.name.startswith("."):
            continue
        try:
            config = load_config(cfg_path)
        except Exception:  # noqa: BLE001 - a broken config is repo check's to report
            continue
        params = {k: v.string_value for k, v in config.parameters.items()}
        qmax = params.get("quantplug_weight_qmax")
        if config.backend != "python" or not qmax:
            continue
        problem = cpu_mismatch(params.get("quantplug_cpu"), int(qmax), isa)
        if problem:
            out.append(f"model {cfg_path.parent.name!r} was {problem}")
    return out
