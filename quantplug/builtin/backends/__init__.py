"""Built-in backends: ONNX Runtime (embedded python-backend model or the container's onnxruntime_onnx)
and TensorRT. Each declares the scheme its runtime executes fast; ``prepare`` obeys it from the start.

A backend fills a Triton model folder for the repository writer (:mod:`quantplug.triton.repository`):
``configure(config, flavour=..., kind=..., threads=..., options=...)`` sets platform/backend, instance
kind and parameters on the ``ModelConfig`` protobuf, and ``write_model(version_dir, onnx_path, config,
flavour=..., options=...)`` writes the version folder's files.
"""

from __future__ import annotations

from typing import Any

from quantplug.hookspecs import hookimpl
from quantplug.registry import Scheme

__all__ = ["ONNXRUNTIME_SCHEME", "TENSORRT_SCHEME", "register_backends"]

ONNXRUNTIME_SCHEME = Scheme(
    name="onnxruntime",
    activation_dtype="uint8",  # ORT fuses U8S8 QDQ into integer kernels; S8S8 runs at FP32 speed on x86
    activation_symmetric=False,
    weight_per_channel=True,
    int4_weights=True,
    min_opset=13,
    cpu_sensitive=True,  # x86 U8S8 kernels without VNNI saturate: 7-bit weights there (quantplug.cpu)
)
TENSORRT_SCHEME = Scheme(
    name="tensorrt",
    activation_dtype="int8",  # TensorRT explicit quantization: symmetric, zero point 0
    activation_symmetric=True,
    weight_per_channel=True,
    int4_weights=True,
    min_opset=13,
)


@hookimpl
def register_backends(register: Any) -> None:
    from .onnxruntime import OnnxRuntimeBackend
    from .tensorrt import TensorRTBackend

    register(OnnxRuntimeBackend(ONNXRUNTIME_SCHEME))
    register(TensorRTBackend(TENSORRT_SCHEME))
