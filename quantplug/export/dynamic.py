"""Dynamic quantization export: ONNX Runtime's ``quantize_dynamic`` on the FP32 graph.

Linear layers that export as ``Gemm`` are first rewritten as ``MatMul + Add`` (ONNX Runtime's dynamic
quantizer only handles MatMul), then MatMul weights become INT8 per-channel and activations are
quantized at run time (``DynamicQuantizeLinear``), the scheme :class:`~quantplug.builtin.methods.dynamic.DynamicMethod`
emulates in PyTorch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..quant.modules import QUANT_WRAPPERS
from ..quant.prepare import act_quantizers

__all__ = ["export_dynamic", "gemm_to_matmul"]


@contextlib.contextmanager
def _float_mode(model: nn.Module) -> Iterator[None]:
    acts = act_quantizers(model)
    modes = [q.mode for q in acts]
    wrappers = [m for m in model.modules() if isinstance(m, QUANT_WRAPPERS)]
    try:
        for q in acts:
            q.mode = "off"
        for m in wrappers:
            m.weight_quant.enabled = False
        yield
    finally:
        for q, mode in zip(acts, modes, strict=True):
            q.mode = mode
        for m in wrappers:
            m.weight_quant.enabled = True


def gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(x, W, b, transB=1)`` with constant W as ``MatMul(x, W^T) + b``."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, n = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        wname = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
        if len(node.input) > 2 and node.input[2]:
            mid = f"{node.output[0]}_matmul"
            nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mid], name=f"{node.name}_MatMul"))
            nodes.append(helper.make_node("Add", [mid, node.input[2]], list(node.output), name=f"{node.name}_Add"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], wname], list(node.output), name=node.name))
        n += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for nd in graph.node for i in nd.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return n


def export_dynamic(qmodel: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike[str],
                   input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                   *, reduce_range: bool = False, scheme: Any = None) -> Path:
    """ONNX Runtime dynamic quantization of the model's MatMuls; ``reduce_range`` gives 7-bit weights
    ([-64, 64], exact on CPUs without VNNI, matching the fake-quant model's ``WeightQuantizer``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnx_export import _torch_export, save_atomic

    with _float_mode(qmodel):
        proto = _torch_export(qmodel, example_inputs, input_names, output_names, 17)
    gemm_to_matmul(proto)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "dynamic.onnx")
        onnx.save(proto, src)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                             reduce_range=reduce_range)
        except Exception as e:
            raise ExportError(f"ONNX Runtime's quantize_dynamic failed: {type(e).__name__}: {e}") from e
        proto = onnx.load(dst)
        if scheme is not None:
            from .metadata import stamp_scheme

            stamp_scheme(proto, scheme)
        return save_atomic(proto, path)
