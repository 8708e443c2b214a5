"""Turn an ONNX graph into a trainable ``torch.fx.GraphModule`` of plain torch modules and functions.

The converted graph is what ``prepare`` expects from a PyTorch model: ``Conv`` becomes ``nn.Conv2d``,
``Gemm`` and ``MatMul`` by a constant become ``nn.Linear`` (a following constant bias ``Add`` joins it),
``BatchNormalization`` becomes ``nn.BatchNorm2d`` (folded by ``prepare``), ``Gather`` from a constant
table becomes ``nn.Embedding``, ``Add`` of two tensors becomes ``operator.add``, ``Relu`` ``torch.relu``,
``Clip(0, 6)`` ``F.relu6``, ``MaxPool`` ``F.max_pool2d`` and ``Flatten``/``Reshape`` ``torch.flatten`` /
``torch.reshape``: so quantizers land exactly where they would on the original PyTorch module. Layers
take their PyTorch names back from the ONNX names (``layer1.0.conv1.weight`` or the exporter's scope
``/layer1/layer1.0/conv1/Conv``), so per-layer overrides use the names a PyTorch user would write.

Everything is checked before anything is built: an op without a converter, a non-default domain, a
subgraph (``If``/``Loop``/``Scan``), local functions, and a shape computed at run time are each one
:class:`OnnxConversionError` line naming the op and node.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ConfigError

__all__ = ["OnnxConversionError", "SUPPORTED_OPS", "Converted", "convert_graph"]


class OnnxConversionError(ConfigError):
    """The ONNX file cannot become a PyTorch graph (names the op or problem and the fix)."""


Value = Any  # fx.Node (computed at run time) or torch.Tensor (a constant)


@dataclass
class Converted:
    module: fx.GraphModule
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shapes: dict[str, list[int | str]]
    input_dtypes: dict[str, torch.dtype]
    opset: int
    op_counts: dict[str, int] = field(default_factory=dict)


_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
           9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = torch.from_numpy(onnx.numpy_helper.to_array(v).copy())
        elif isinstance(v, list):
            v = list(v)
        out[a.name] = v
    return out


def _module_path(node: Any, weight_name: str | None) -> str:
    """The PyTorch qualified name of a layer, from its weight's name or the exporter's scope."""
    if weight_name and weight_name.endswith(".weight") and "::" not in weight_name:
        return weight_name[: -len(".weight")]
    segs = [s for s in node.name.strip("/").split("/")[:-1] if s]
    parts: list[str] = []
    for s in segs:  # "/layers/layers.0/downsample/downsample.0/Conv" -> layers.0.downsample.0
        if parts and s.startswith(parts[-1] + "."):
            parts[-1] = s
        else:
            parts.append(s)
    return ".".join(parts)


def _clean(name: str) -> str:
    name = re.sub(r"[^0-9A-Za-z_.]", "_", name).strip("._")
    return re.sub(r"\.+", ".", name)


class _Builder:
    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[str, Value] = {}
        self.used_names: set[str] = set()
        self.n_const = 0
        self.static_batch: int | None = None
        self.consumers: dict[str, list[Any]] = {}
        for n in proto.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.skip: set[int] = set()  # ids of nodes merged into a previous one (MatMul + bias Add)

    # --- values -------------------------------------------------------------------------------------
    def node_value(self, v: Value) -> Any:
        """An fx argument: a node as is, a constant as a buffer (get_attr)."""
        if isinstance(v, fx.Node) or not isinstance(v, torch.Tensor):
            return v
        self.n_const += 1
        name = f"const_{self.n_const}"
        self.root.register_buffer(name, v.clone())
        return self.graph.get_attr(name)

    def const(self, v: Value, node: Any, what: str) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise OnnxConversionError(
                f"{node.op_type} node {node.name!r}: its {what} is computed at run time (a dynamic shape); "
                "only constant shapes convert: export the model with constant shapes except the batch "
                "dimension (e.g. onnxsim or torch.onnx.export with do_constant_folding=True)")
        return v

    def call(self, fn: Callable[..., Any], *args: Value, **kwargs: Any) -> Value:
        if all(not isinstance(a, fx.Node) for a in args) and not any(isinstance(a, fx.Node) for a in kwargs.values()):
            with torch.no_grad():
                return fn(*args, **kwargs)  # constant folding
        return self.graph.call_function(fn, tuple(self.node_value(a) for a in args), kwargs)

    def method(self, name: str, obj: Value, *args: Any) -> Value:
        if not isinstance(obj, fx.Node):
            return getattr(obj, name)(*args)
        return self.graph.call_method(name, (obj, *args))

    def add_module(self, path: str, module: nn.Module, *args: Value) -> fx.Node:
        base = _clean(path) or type(module).__name__.lower()
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        parts = name.split(".")
        parent = self.root
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
            if not isinstance(parent, nn.Module) or type(parent) is not nn.Module:
                name = name.replace(".", "_")
                self.used_names.add(name)
                parent, parts = self.root, [name]
                break
        parent.add_module(parts[-1], module)
        return self.graph.call_module(name, tuple(self.node_value(a) for a in args))


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().float())


def _ints(t: Any) -> list[int]:
    return [int(v) for v in (t.reshape(-1).tolist() if isinstance(t, torch.Tensor) else t)]


# --- converters: (builder, node, inputs, attrs) -> outputs --------------------------------------------------

def _conv(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    w = b.const(x[1], node, "weight")
    bias = b.const(x[2], node, "bias") if len(x) > 2 and x[2] is not None else None
    if w.dim() not in (3, 4):
        raise OnnxConversionError(f"Conv node {node.name!r} is {w.dim() - 2}-D; only 1-D and 2-D convolutions convert")
    k = w.dim() - 2
    pads = a.get("pads", [0] * 2 * k)
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise OnnxConversionError(f"Conv node {node.name!r} uses auto_pad={a['auto_pad']}; re-export with explicit pads")
    inp = x[0]
    if list(pads[:k]) != list(pads[k:]):  # asymmetric: pad explicitly first
        torch_pads: list[int] = []
        for i in reversed(range(k)):
            torch_pads += [pads[i], pads[i + k]]
        inp = b.call(F.pad, inp, torch_pads)
        pads = [0] * 2 * k
    cls: Any = nn.Conv2d if k == 2 else nn.Conv1d
    groups = int(a.get("group", 1))
    conv = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1] * k)),
               padding=tuple(pads[:k]), dilation=tuple(a.get("dilations", [1] * k)), groups=groups,
               bias=bias is not None)
    conv.weight = _param(w)
    if bias is not None:
        conv.bias = _param(bias)
    return b.add_module(_module_path(node, node.input[1]), conv, inp)


def _linear(b: _Builder, node: Any, x: Value, w: torch.Tensor, bias: torch.Tensor | None, name: str) -> Value:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    lin.weight = _param(w)
    if bias is not None:
        lin.bias = _param(bias.reshape(-1))
    return b.add_module(_module_path(node, name), lin, x)


def _gemm(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    c = x[2] if len(x) > 2 else None
    if isinstance(x[1], torch.Tensor) and not a.get("transA", 0) and alpha == 1.0 and (
            c is None or (isinstance(c, torch.Tensor) and beta == 1.0 and c.numel() == c.shape[-1])):
        w = x[1] if a.get("transB", 0) else x[1].t()
        return _linear(b, node, x[0], w, c, node.input[1])
    A = b.call(torch.transpose, x[0], 0, 1) if a.get("transA", 0) else x[0]
    B = b.call(torch.transpose, x[1], 0, 1) if a.get("transB", 0) else x[1]
    y = b.call(torch.matmul, A, B)
    if alpha != 1.0:
        y = b.call(operator.mul, y, alpha)
    if c is not None:
        y = b.call(operator.add, y, c if beta == 1.0 else b.call(operator.mul, c, beta))
    return y


def _matmul(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    if isinstance(x[1], torch.Tensor) and x[1].dim() == 2 and isinstance(x[0], fx.Node):
        users = b.consumers.get(node.output[0], [])
        bias = None
        if len(users) == 1 and users[0].op_type == "Add" and len(users[0].input) == 2:
            other = [i for i in users[0].input if i != node.output[0]]
            cand = b.env.get(other[0]) if other else None
            if isinstance(cand, torch.Tensor) and cand.dim() == 1 and cand.shape[0] == x[1].shape[1]:
                bias = cand
                b.skip.add(id(users[0]))
                y = _linear(b, node, x[0], x[1].t(), bias, node.input[1])
                b.env[users[0].output[0]] = y
                return y
        return _linear(b, node, x[0], x[1].t(), None, node.input[1])
    return b.call(torch.matmul, x[0], x[1])


def _bn(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    scale, bias, mean, var = (b.const(v, node, "statistics") for v in x[1:5])
    cls = nn.BatchNorm2d if scale.dim() == 1 else None
    if cls is None:  # pragma: no cover - ONNX BN parameters are 1-D
        raise OnnxConversionError(f"BatchNormalization node {node.name!r} has non 1-D parameters")
    bn = nn.BatchNorm2d(scale.shape[0], eps=float(a.get("epsilon", 1e-5)))
    bn.weight, bn.bias = _param(scale), _param(bias)
    bn.running_mean.copy_(mean.float())  # type: ignore[union-attr]
    bn.running_var.copy_(var.float())  # type: ignore[union-attr]
    bn.eval()
    return b.add_module(_module_path(node, node.input[1]), bn, x[0])


def _layernorm(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    w = b.const(x[1], node, "scale")
    if int(a.get("axis", -1)) not in (-1, -w.dim()) and w.dim() != 1:
        raise OnnxConversionError(f"LayerNormalization node {node.name!r}: only the last axis converts")
    ln = nn.LayerNorm(list(w.shape), eps=float(a.get("epsilon", 1e-5)), elementwise_affine=True)
    ln.weight = _param(w)
    bias = x[2] if len(x) > 2 and x[2] is not None else torch.zeros_like(w)
    ln.bias = _param(b.const(bias, node, "bias"))
    return b.add_module(_module_path(node, node.input[1]), ln, x[0])


def _clip(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    lo = a.get("min") if "min" in a else (float(b.const(x[1], node, "min")) if len(x) > 1 and x[1] is not None else None)
    hi = a.get("max") if "max" in a else (float(b.const(x[2], node, "max")) if len(x) > 2 and x[2] is not None else None)
    if lo == 0.0 and hi == 6.0:
        return b.call(F.relu6, x[0])
    if lo == 0.0 and hi is None:
        return b.call(torch.relu, x[0])
    return b.call(torch.clamp, x[0], lo, hi)


def _pool_args(node: Any, a: dict[str, Any]) -> dict[str, Any]:
    k = a["kernel_shape"]
    pads = a.get("pads", [0] * 2 * len(k))
    if list(pads[: len(k)]) != list(pads[len(k):]) or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise OnnxConversionError(f"{node.op_type} node {node.name!r} has asymmetric or automatic padding; "
                                  "re-export with symmetric pads")
    return {"kernel_size": tuple(k), "stride": tuple(a.get("strides", [1] * len(k))),
            "padding": tuple(pads[: len(k)]), "ceil_mode": bool(a.get("ceil_mode", 0))}


def _maxpool(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    if len(node.output) > 1 and node.output[1]:
        raise OnnxConversionError(f"MaxPool node {node.name!r} returns indices; not supported")
    kw = _pool_args(node, a)
    kw["dilation"] = tuple(a.get("dilations", [1] * len(kw["kernel_size"])))
    return b.call(F.max_pool2d if len(kw["kernel_size"]) == 2 else F.max_pool1d, x[0], **kw)


def _avgpool(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    kw = _pool_args(node, a)
    kw["count_include_pad"] = bool(a.get("count_include_pad", 0))
    return b.call(F.avg_pool2d if len(kw["kernel_size"]) == 2 else F.avg_pool1d, x[0], **kw)


def _axes(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> list[int] | None:
    if "axes" in a:
        return list(a["axes"])
    if len(x) > 1 and x[1] is not None:
        return _ints(b.const(x[1], node, "axes"))
    return None


def _reduce(fn: Callable[..., Any]) -> Callable[..., Value]:
    def convert(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
        axes = _axes(b, node, x, a)
        keep = bool(a.get("keepdims", 1))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x[0]
            if not isinstance(x[0], torch.Tensor):
                raise OnnxConversionError(f"{node.op_type} node {node.name!r} reduces over all axes; give axes")
            axes = list(range(x[0].dim()))
        return b.call(fn, x[0], dim=tuple(axes), keepdim=keep)

    return convert


def _reduce_l2(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    axes = _axes(b, node, x, a)
    return b.call(torch.linalg.vector_norm, x[0], 2, dim=tuple(axes) if axes else None,
                  keepdim=bool(a.get("keepdims", 1)))


def _flatten(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    axis = int(a.get("axis", 1))
    if axis == 1:
        return b.call(torch.flatten, x[0], 1)
    if axis == 0:
        return b.call(torch.reshape, x[0], (1, -1))
    if isinstance(x[0], torch.Tensor):
        return torch.reshape(x[0], (int(np.prod(x[0].shape[:axis])), -1))
    return b.call(torch.reshape, x[0], (_prod_lead(b, x[0], axis), -1))


def _prod_lead(b: _Builder, x: Value, axis: int) -> Value:
    out = b.method("size", x, 0)
    for i in range(1, axis):
        out = b.call(operator.mul, out, b.method("size", x, i))
    return out


def _reshape(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    shape = _ints(b.const(x[1], node, "target shape"))
    if not isinstance(x[0], fx.Node):
        return torch.reshape(x[0], [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)])
    target: list[Any] = []
    for i, s in enumerate(shape):
        if s == 0 and not a.get("allowzero", 0):
            target.append(b.method("size", x[0], i))
        elif i == 0 and b.static_batch is not None and s == b.static_batch and b.static_batch > 1:
            target.append(b.method("size", x[0], 0))  # a static-batch export: keep the batch dimension free
        else:
            target.append(s)
    return b.call(torch.reshape, x[0], tuple(target))


def _transpose(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    perm = a.get("perm")
    if perm is None:
        return b.method("permute", x[0], *reversed(range(_rank(b, node, x[0]))))
    return b.method("permute", x[0], *perm)


def _rank(b: _Builder, node: Any, v: Value) -> int:
    if isinstance(v, torch.Tensor):
        return v.dim()
    raise OnnxConversionError(f"{node.op_type} node {node.name!r}: needs the input rank; give perm explicitly")


def _unsqueeze(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    axes = sorted(_axes(b, node, x, a) or [])
    y = x[0]
    for ax in axes:
        y = b.call(torch.unsqueeze, y, ax)
    return y


def _squeeze(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    axes = _axes(b, node, x, a)
    if axes is None:
        return b.call(torch.squeeze, x[0])
    return b.call(torch.squeeze, x[0], tuple(axes))


def _concat(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    parts = [v for v in x if v is not None]
    if all(isinstance(v, torch.Tensor) for v in parts):
        return torch.cat(parts, int(a["axis"]))
    return b.graph.call_function(torch.cat, ([b.node_value(v) for v in parts], int(a["axis"])))


def _gather(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    axis = int(a.get("axis", 0))
    data, idx = x
    if isinstance(data, torch.Tensor) and data.dim() == 2 and axis == 0 and isinstance(idx, fx.Node):
        emb = nn.Embedding(data.shape[0], data.shape[1])
        emb.weight = _param(data)
        return b.add_module(_module_path(node, node.input[0]), emb, idx)
    if isinstance(idx, torch.Tensor) and idx.dim() == 0:
        return b.call(torch.select, data, axis, int(idx))
    if isinstance(idx, torch.Tensor):
        return b.call(torch.index_select, data, axis, idx.reshape(-1).long()) if idx.dim() == 1 else \
            b.call(_take, data, idx, axis)
    return b.call(_take, data, idx, axis)


def _take(data: torch.Tensor, idx: torch.Tensor, axis: int) -> torch.Tensor:
    out = torch.index_select(data, axis, idx.reshape(-1).long())
    shape = list(data.shape[:axis]) + list(idx.shape) + list(data.shape[axis + 1:])
    return out.reshape(shape)


def _cast(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    dtype = _DTYPES.get(int(a["to"]))
    if dtype is None:
        raise OnnxConversionError(f"Cast node {node.name!r} casts to ONNX type {a['to']}, which has no torch dtype")
    return b.method("to", x[0], dtype)


def _softmax(fn: Callable[..., Any]) -> Callable[..., Value]:
    def convert(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
        return b.call(fn, x[0], int(a.get("axis", -1)))

    return convert


def _gelu(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    return b.call(F.gelu, x[0], approximate=str(a.get("approximate", "none")))


def _where(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    return b.call(torch.where, *x)


def _global_avg(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    return b.call(torch.mean, x[0], dim=(2, 3), keepdim=True)


def _global_max(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    return b.call(torch.amax, x[0], dim=(2, 3), keepdim=True)


def _constant(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    if "value" in a:
        return a["value"]
    for key, dtype in (("value_float", torch.float32), ("value_int", torch.int64)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    for key, dtype in (("value_floats", torch.float32), ("value_ints", torch.int64)):
        if key in a:
            return torch.tensor(list(a[key]), dtype=dtype)
    raise OnnxConversionError(f"Constant node {node.name!r} has no supported value attribute ({', '.join(a)})")


def _shape(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    if isinstance(x[0], torch.Tensor):
        return torch.tensor(list(x[0].shape), dtype=torch.int64)[a.get("start", 0):a.get("end")]
    raise OnnxConversionError(
        f"Shape node {node.name!r}: the graph computes shapes at run time (dynamic shape arithmetic), which "
        "does not convert; simplify the file with constant shapes (e.g. onnxsim with a fixed input shape, or "
        "torch.onnx.export(..., dynamo=True)), or quantize the PyTorch model with --model")


def _binary(fn: Callable[..., Any]) -> Callable[..., Value]:
    def convert(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
        return b.call(fn, x[0], x[1])

    return convert


def _unary(fn: Callable[..., Any]) -> Callable[..., Value]:
    def convert(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
        return b.call(fn, x[0])

    return convert


def _identity(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    return x[0]


def _expand(b: _Builder, node: Any, x: list[Value], a: dict[str, Any]) -> Value:
    shape = _ints(b.const(x[1], node, "target shape"))
    return b.call(_onnx_expand, x[0], tuple(shape))


def _onnx_expand(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    ones = torch.ones(shape, dtype=t.dtype, device=t.device)
    return t * ones if t.dtype != torch.bool else (t & ones)


_CONVERTERS: dict[str, Callable[..., Value]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _bn,
    "LayerNormalization": _layernorm, "Relu": _unary(torch.relu), "Clip": _clip,
    "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh), "Erf": _unary(torch.erf),
    "Sqrt": _unary(torch.sqrt), "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Neg": _unary(operator.neg),
    "Abs": _unary(torch.abs), "Reciprocal": _unary(torch.reciprocal), "Not": _unary(torch.logical_not),
    "HardSigmoid": _unary(F.hardsigmoid), "HardSwish": _unary(F.hardswish), "Gelu": _gelu,
    "Add": _binary(operator.add), "Sub": _binary(operator.sub), "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv), "Pow": _binary(torch.pow), "Max": _binary(torch.maximum),
    "Min": _binary(torch.minimum), "Equal": _binary(torch.eq), "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt), "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or),
    "Where": _where, "MaxPool": _maxpool, "AveragePool": _avgpool, "GlobalAveragePool": _global_avg,
    "GlobalMaxPool": _global_max, "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax), "ReduceL2": _reduce_l2, "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": _transpose, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat, "Gather": _gather,
    "Cast": _cast, "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "Constant": _constant, "Identity": _identity, "Dropout": _identity, "Shape": _shape, "Expand": _expand,
}
SUPPORTED_OPS = tuple(sorted(_CONVERTERS))


def check_graph(proto: Any, where: str) -> None:
    """Everything that makes a file unconvertible, found before anything is built (one line)."""
    g = proto.graph
    if len(proto.functions):
        names = ", ".join(f.name for f in proto.functions[:3])
        raise OnnxConversionError(f"{where}: the model holds {len(proto.functions)} local function graph(s) "
                                  f"({names}); inline them first (onnx.inliner.inline_local_functions)")
    problems: dict[str, str] = {}
    for n in g.node:
        if any(att.type in (5, 10) for att in n.attribute):  # GRAPH / GRAPHS: If, Loop, Scan
            raise OnnxConversionError(f"{where}: node {n.name!r} ({n.op_type}) holds subgraphs (several graphs: "
                                      "control flow); only a single straight-line graph converts")
        if n.domain not in ("", "ai.onnx"):
            problems.setdefault(f"{n.domain}.{n.op_type}", n.name)
        elif n.op_type not in _CONVERTERS:
            problems.setdefault(n.op_type, n.name)
    if problems:
        listed = ", ".join(f"{op} (node {name!r})" for op, name in list(problems.items())[:6])
        raise OnnxConversionError(f"{where}: no converter for op(s) {listed}; quantplug converts "
                                  f"{', '.join(SUPPORTED_OPS)}")
    if len(g.output) == 0:
        raise OnnxConversionError(f"{where}: the graph has no outputs")


def _input_info(proto: Any) -> tuple[list[Any], dict[str, list[int | str]], dict[str, torch.dtype]]:
    inits = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    shapes: dict[str, list[int | str]] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i in graph_inputs:
        tt = i.type.tensor_type
        shapes[i.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim]
        dtypes[i.name] = _DTYPES.get(tt.elem_type, torch.float32)
    return graph_inputs, shapes, dtypes


def convert_graph(proto: Any, where: str = "model.onnx") -> Converted:
    """Convert a loaded, checked ONNX ModelProto (weights in memory) into a :class:`Converted`."""
    import onnx

    check_graph(proto, where)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    b = _Builder(proto)
    graph_inputs, shapes, dtypes = _input_info(proto)
    if not graph_inputs:
        raise OnnxConversionError(f"{where}: the graph has no inputs")
    batches = {s[0] for s in shapes.values() if s}
    if len(batches) == 1 and isinstance(next(iter(batches)), int):
        b.static_batch = int(next(iter(batches)))  # type: ignore[arg-type]
    for t in proto.graph.initializer:
        b.env[t.name] = torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
    for i in graph_inputs:
        b.env[i.name] = b.graph.placeholder(_clean(i.name).replace(".", "_") or "input")
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
        if id(n) in b.skip:
            continue
        ins = [b.env[name] if name else None for name in n.input]
        missing = [name for name, v in zip(n.input, ins, strict=True) if name and v is None and name not in b.env]
        if missing:
            raise OnnxConversionError(f"{where}: node {n.name!r} ({n.op_type}) reads {missing[0]!r}, which no node "
                                      "produces; the graph is not topologically sorted or is incomplete")
        try:
            out = _CONVERTERS[n.op_type](b, n, ins, _attrs(n))
        except OnnxConversionError:
            raise
        except Exception as e:
            raise OnnxConversionError(f"{where}: {n.op_type} node {n.name!r} does not convert: "
                                      f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        outs = out if isinstance(out, tuple) else (out,)
        for name, v in zip(n.output, outs, strict=False):
            if name:
                b.env[name] = v
    results = [b.node_value(b.env[o.name]) for o in proto.graph.output]
    b.graph.output(results[0] if len(results) == 1 else tuple(results))
    gm = fx.GraphModule(b.root, b.graph, "OnnxModel")
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return Converted(gm.eval(), tuple(i.name for i in graph_inputs), tuple(o.name for o in proto.graph.output),
                     shapes, dtypes, opset, counts)
