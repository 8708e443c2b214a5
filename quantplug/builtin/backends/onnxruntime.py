"""The ``onnxruntime`` backend: the exported (QDQ) ONNX run by ONNX Runtime.

Flavours:
- ``embedded`` (default): a python-backend model (``model.py`` + ``model.onnx``) that runs the ONNX with
  ONNX Runtime inside the bundled ``tritonserver`` (which has only the python backend). Options:
  ``threads`` (intra-op threads, 0 = cores / instances), ``allow_spinning`` (bool), ``providers``.
- ``container``: ``platform: "onnxruntime_onnx"`` for NVIDIA's Triton container. Option
  ``accelerator="tensorrt"`` adds ONNX Runtime's TensorRT execution accelerator in INT8 mode, so the same
  QDQ model runs through TensorRT on the GPU (engine cache in ``trt_cache_path``, default /tmp).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantplug.errors import ConfigError
from quantplug.registry import Scheme

from ._common import copy_onnx, set_kind, set_param

__all__ = ["OnnxRuntimeBackend"]


@dataclass(frozen=True)
class OnnxRuntimeBackend:
    scheme: Scheme
    name: str = "onnxruntime"
    description: str = ("ONNX Runtime (CPU): UINT8 activations, INT8 per-channel weights; flavours embedded "
                        "(python backend) and container (onnxruntime_onnx, optional TensorRT accelerator)")
    flavours: tuple[str, ...] = ("embedded", "container")

    def configure(self, config: Any, *, flavour: str, kind: str | None, threads: int | None,
                  options: dict[str, Any]) -> None:
        if flavour == "embedded":
            config.backend = "python"
            set_kind(config, kind or "KIND_CPU")
            set_param(config, "onnx_file", "model.onnx")
            set_param(config, "intra_op_threads", threads or 0)
            set_param(config, "allow_spinning", "1" if options.get("allow_spinning", True) else "0")
            if options.get("providers"):
                set_param(config, "providers", ",".join(options["providers"]))
        elif flavour == "container":
            config.platform = "onnxruntime_onnx"
            config.backend = "onnxruntime"
            accelerator = options.get("accelerator")
            set_kind(config, kind or ("KIND_GPU" if accelerator else "KIND_CPU"))
            if threads:
                set_param(config, "intra_op_thread_count", threads)
            if accelerator == "tensorrt":
                acc = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
                acc.parameters["precision_mode"] = "INT8"  # QDQ nodes carry the scales: explicit quantization
                acc.parameters["max_workspace_size_bytes"] = str(options.get("workspace_bytes", 1 << 30))
                acc.parameters["trt_engine_cache_enable"] = "1"
                acc.parameters["trt_engine_cache_path"] = str(options.get("trt_cache_path", "/tmp"))
            elif accelerator is not None:
                raise ConfigError(f"unknown accelerator {accelerator!r} for flavour container; valid: tensorrt")
        else:
            raise ConfigError(f"unknown flavour {flavour!r} for backend onnxruntime; valid: "
                              f"{', '.join(self.flavours)}")

    def write_model(self, version_dir: Path, onnx_path: Path, config: Any, *, flavour: str,
                    options: dict[str, Any]) -> None:
        copy_onnx(onnx_path, version_dir)
        if flavour == "embedded":
            from quantplug.triton.pbmodel import MODEL_PY

            shutil.copyfile(MODEL_PY, version_dir / "model.py")
