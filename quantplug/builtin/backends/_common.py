"""Helpers shared by the built-in backends."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from quantplug.errors import ConfigError

__all__ = ["copy_onnx", "set_param", "set_kind"]


def set_param(config: Any, key: str, value: object) -> None:
    config.parameters[key].string_value = str(value)


def set_kind(config: Any, kind: str) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        value = pb.ModelInstanceGroup.Kind.Value(kind)
    except ValueError:
        raise ConfigError(f"unknown instance kind {kind!r}; valid: KIND_CPU, KIND_GPU, KIND_AUTO") from None
    if not config.instance_group:
        config.instance_group.add(count=1)
    for group in config.instance_group:
        group.kind = value


def copy_onnx(onnx_path: Path, version_dir: Path, name: str = "model.onnx") -> None:
    """Copy the ONNX file (and any external-data files it references) into ``version_dir``."""
    import onnx

    shutil.copyfile(onnx_path, version_dir / name)
    model = onnx.load(str(onnx_path), load_external_data=False)
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    src = onnx_path.parent / entry.value
                    dst = version_dir / entry.value
                    if not dst.exists():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, dst)
