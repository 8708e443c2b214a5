"""Built-in backends: ONNX Runtime (embedded python-backend model or the container's onnxruntime_onnx)
and TensorRT. Each declares the scheme its runtime executes fast; ``prepare`` obeys it from the start."""

from __future__ import annotations

from dataclasses import dataclass

from quantplug.hookspecs import hookimpl
from quantplug.registry import Scheme

ONNXRUNTIME_SCHEME = Scheme(
    name="onnxruntime",
    activation_dtype="uint8",  # ORT fuses U8S8 QDQ into integer kernels; S8S8 runs at FP32 speed on x86
    activation_symmetric=False,
    weight_per_channel=True,
    int4_weights=True,
    min_opset=13,
)
TENSORRT_SCHEME = Scheme(
    name="tensorrt",
    activation_dtype="int8",  # TensorRT explicit quantization: symmetric, zero point 0
    activation_symmetric=True,
    weight_per_channel=True,
    int4_weights=True,
    min_opset=13,
)


@dataclass(frozen=True)
class _SchemeOnlyBackend:
    name: str
    description: str
    scheme: Scheme


@hookimpl
def register_backends(register):  # type: ignore[no-untyped-def]
    register(_SchemeOnlyBackend("onnxruntime", "ONNX Runtime (CPU): UINT8 activations, INT8 per-channel weights",
                                ONNXRUNTIME_SCHEME))
    register(_SchemeOnlyBackend("tensorrt", "TensorRT 10+ explicit quantization: symmetric INT8", TENSORRT_SCHEME))
