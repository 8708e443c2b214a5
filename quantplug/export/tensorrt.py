"""TensorRT explicit-quantization rules, checked over an exported QDQ graph.

TensorRT 10 accepts: INT8 (or INT4 weight) Q/DQ with all zero points 0; activation scales per-tensor;
weight scales per-channel on the output-channel axis (axis 0 for Conv and Gemm(transB=1), axis 1 for a
MatMul's [in, out] weight) or blocked INT4; opset >= 13 for per-channel INT8 and >= 21 for INT4.
Each violation raises :class:`~quantplug.errors.ExportError` naming the node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ExportError

__all__ = ["TARGET_CHECKS", "check_tensorrt_rules"]


def _opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def check_tensorrt_rules(model: Any) -> None:
    """Raise ExportError on the first Q/DQ node TensorRT would reject or mis-execute."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    opset = _opset(model)
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        scale = inits.get(node.input[1]) if len(node.input) > 1 else None
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        data = inits.get(node.input[0])
        is_weight = node.op_type == "DequantizeLinear" and data is not None
        qtype = (data.data_type if data is not None and is_weight
                 else (zp.data_type if zp is not None else onnx.TensorProto.UINT8))
        if node.op_type == "DequantizeLinear" and not is_weight and zp is None:
            continue  # activation DQ typed by its Q, checked there
        if zp is not None:
            if np.any(numpy_helper.to_array(zp) != 0):
                raise ExportError(f"{where}: zero point is not 0; TensorRT needs symmetric quantization "
                                  "(export with --target tensorrt from a model prepared for tensorrt)")
        if is_weight and data is not None and data.data_type == onnx.TensorProto.INT32:
            continue  # an INT32 bias: TensorRT wants float biases, but a DQ'd bias is still legal
        if qtype not in (onnx.TensorProto.INT8, onnx.TensorProto.INT4):
            raise ExportError(f"{where}: quantized type {onnx.TensorProto.DataType.Name(qtype)} is not INT8/INT4; "
                              "TensorRT executes INT8 (activations and weights) and INT4 (weights only)")
        if qtype == onnx.TensorProto.INT4:
            if not is_weight:
                raise ExportError(f"{where}: INT4 activations are not supported by TensorRT; use 8-bit activations")
            if opset < 21:
                raise ExportError(f"{where}: INT4 weights need opset >= 21, the model has {opset}")
        numel = int(np.prod(scale.dims)) if scale is not None and len(scale.dims) else 1
        if not is_weight:
            if numel != 1:
                raise ExportError(f"{where}: activation scale has {numel} values; TensorRT needs per-tensor "
                                  "activation scales")
            continue
        if numel == 1:
            continue  # per-tensor weight: legal
        if opset < 13:
            raise ExportError(f"{where}: per-channel weight scales need opset >= 13, the model has {opset}")
        axis = int(attrs.get("axis", 1))
        users = consumers.get(node.output[0], [])
        for user in users:
            if user.op_type == "MatMul":
                expected = 1 if "block_size" not in attrs else 0
            elif user.op_type in ("Conv", "Gemm", "ConvTranspose", "Gather"):
                expected = 0 if "block_size" not in attrs else 1
                if user.op_type == "Gemm":
                    trans_b = any(a.name == "transB" and a.i for a in user.attribute)
                    expected = (0 if trans_b else 1) if "block_size" not in attrs else (1 if trans_b else 0)
            else:
                continue
            if axis != expected:
                raise ExportError(f"{where}: weight scales are on axis {axis} but TensorRT needs the output-"
                                  f"channel axis ({expected}) for its {user.op_type} consumer {user.name!r}")


TARGET_CHECKS: dict[str, Callable[[Any], None]] = {"tensorrt": check_tensorrt_rules}
