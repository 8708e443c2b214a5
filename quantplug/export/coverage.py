"""What really runs in integer: read ONNX Runtime's own execution of a model, layer by layer.

A QDQ graph only *asks* for integer kernels; ONNX Runtime forms them (``DQ -> Conv -> Q`` becomes
``QLinearConv``, ``DQ -> MatMul`` becomes ``MatMulIntegerToFloat``, ...) only where the pattern is
complete, and runs the rest in float. :func:`integer_share` runs the model once in ONNX Runtime with all
graph optimizations on (as served) and the profiler on, and reads from the profile which kernel each
conv/matrix-product node ran as and the shapes it ran on. The multiply-adds of each node follow from
those shapes, so the report says how much of the model's arithmetic runs in integer.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FLOAT_OPS", "INTEGER_OPS", "Coverage", "LayerCoverage", "integer_share", "LOW_SHARE"]

# Kernels that multiply in integer (ONNX standard and ONNX Runtime contrib ops).
INTEGER_OPS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                         "DynamicQuantizeMatMul", "QGemm", "QAttention", "MatMulNBits", "QOrderedMatMul"})
# The same arithmetic in float.
FLOAT_OPS = frozenset({"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
                       "Attention", "MultiHeadAttention", "NhwcFusedConv"})
# Where the weight (the second matrix) is among the kernel's inputs.
_WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "QAttention": 1}
LOW_SHARE = 0.5  # below this share of multiply-adds in integer, INT8 is rarely faster than FP32


@dataclass
class LayerCoverage:
    node: str
    op: str
    integer: bool
    macs: int


@dataclass
class Coverage:
    integer_macs: int
    total_macs: int
    layers: list[LayerCoverage] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.integer_macs / self.total_macs if self.total_macs else 0.0

    @property
    def integer_layers(self) -> int:
        return sum(1 for layer in self.layers if layer.integer)

    def summary(self) -> str:
        return (f"{self.share:.0%} of conv/matmul multiply-adds in integer "
                f"({self.integer_layers}/{len(self.layers)} layers)")

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"integer_share": round(self.share, 4), "integer_macs": self.integer_macs,
                             "total_macs": self.total_macs, "integer_layers": self.integer_layers,
                             "compute_layers": len(self.layers)}
        if layers:
            d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def _shape(entry: Mapping[str, Any]) -> list[int]:
    return [int(d) for d in next(iter(entry.values()))] if entry else []


def _macs(op: str, ins: list[list[int]], outs: list[list[int]], weight: list[int] | None) -> int:
    if not outs or not outs[0]:
        return 0
    out = outs[0]
    a = ins[0] if ins else []
    if op in ("Attention", "QAttention", "MultiHeadAttention"):
        if len(a) != 3:
            return 0
        b, s, hidden = a
        return b * s * (math.prod(weight) if weight else 0) + 2 * b * s * s * hidden
    if "Conv" in op:
        # each output value (in any layout: NCHW, NHWC, blocked NCHWc) costs one pass over one filter
        return math.prod(out) * math.prod(weight[1:]) if weight else 0
    if op in ("Gemm", "FusedGemm", "QGemm"):
        return math.prod(out) * (math.prod(a) // out[0]) if out[0] and a else 0
    return math.prod(out) * (a[-1] if a else 0)


def _weights(model_path: Path) -> dict[str, list[int]]:
    """Node name -> shape of its weight initializer, from the optimized graph ONNX Runtime saved."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    dims = {init.name: list(init.dims) for init in proto.graph.initializer}
    for node in proto.graph.node:  # a float conv on a dequantized weight: the weight is DQ(initializer)
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in dims:
            dims.setdefault(node.output[0], dims[node.input[0]])
    out: dict[str, list[int]] = {}
    for node in proto.graph.node:
        index = _WEIGHT_INPUT.get(node.op_type, 1)
        if len(node.input) > index and node.input[index] in dims:
            out[node.name] = dims[node.input[index]]
    return out


def _feeds(session: Any, feeds: Mapping[str, np.ndarray] | None, batch: int, seq: int) -> dict[str, np.ndarray]:
    if feeds is not None:
        return {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for i in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else (batch if n == 0 else seq) for n, d in enumerate(i.shape)]
        if "float" in i.type:
            dtype = np.float16 if "float16" in i.type else np.float32
            out[i.name] = rng.standard_normal(dims).astype(dtype)
        elif "bool" in i.type:
            out[i.name] = np.ones(dims, dtype=bool)
        else:
            fill = 1 if "mask" in i.name else 0
            out[i.name] = np.full(dims, fill, dtype=np.int32 if "int32" in i.type else np.int64)
    return out


def integer_share(path: str | os.PathLike[str], feeds: Mapping[str, np.ndarray] | None = None, *,
                  batch: int = 1, seq: int = 16) -> Coverage:
    """Run ``path`` once in ONNX Runtime (CPU, all optimizations, profiler on) and classify its kernels.

    ``feeds``: inputs to run on (default: random floats, zero ids, all-ones masks; free dimensions are
    ``batch`` for the first axis and ``seq`` for the others).
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="quantplug-coverage-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        opts.log_severity_level = 3
        optimized = Path(tmp) / "optimized.onnx"
        opts.optimized_model_filepath = str(optimized)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sess.run(None, _feeds(sess, feeds, batch, seq))
        profile = sess.end_profiling()
        events = json.loads(Path(profile).read_text())
        weights = _weights(optimized)
    layers: list[LayerCoverage] = []
    seen: set[str] = set()
    for ev in events:
        args = ev.get("args") or {}
        op = str(args.get("op_name", ""))
        name = str(ev.get("name", ""))
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time") or name in seen:
            continue
        if op not in INTEGER_OPS and op not in FLOAT_OPS:
            continue
        seen.add(name)
        ins = [_shape(e) for e in args.get("input_type_shape", [])]
        outs = [_shape(e) for e in args.get("output_type_shape", [])]
        node = name[: -len("_kernel_time")]
        weight = weights.get(node)
        if weight is None and len(ins) > 1 and len(ins[1]) >= 2:  # a weight computed at run time
            weight = ins[1]
        layers.append(LayerCoverage(node, op, op in INTEGER_OPS, int(_macs(op, ins, outs, weight))))
    total = sum(layer.macs for layer in layers)
    integer = sum(layer.macs for layer in layers if layer.integer)
    return Coverage(integer, total, layers)
