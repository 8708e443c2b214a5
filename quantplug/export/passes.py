"""ONNX graph passes run after the torch export.

- :func:`fold_weights`: each quantized weight, exported as its dequantized FP32 constant, becomes an INT8
  or INT4 initializer + ``DequantizeLinear`` (per-channel or blocked). The file then holds 8- or 4-bit
  weights; the initializers are found by value, so this does not depend on exporter naming.
- :func:`quantize_biases`: Conv/Gemm biases become INT32 + ``DequantizeLinear`` with scale
  ``input_scale * weight_scale`` (ONNX Runtime only fuses ``DQ -> Conv -> Q`` into ``QLinearConv`` when
  every input is dequantized).
- :func:`scalar_qparams`: one-element per-tensor scales/zero points become scalars.
- :func:`gather_then_dequantize`: an INT8 embedding table is looked up before its rows are dequantized.
- :func:`guard_masked_softmax`: masked softmaxes keep their exp arguments in ONNX Runtime's fast range.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WeightSpec", "spec_digest", "fold_weights", "quantize_biases", "scalar_qparams", "constants_to_initializers",
           "gather_then_dequantize", "guard_masked_softmax"]


@dataclass
class WeightSpec:
    """A quantized weight: integers in the weight's shape and one scale per row of its grouping."""

    name: str
    q: np.ndarray  # int8 values (INT4 ones lie in [-8, 7])
    scale: np.ndarray  # per-channel [out], per-group [out * in / g] or per-tensor [1]
    bits: int
    per_channel: bool
    group_size: int | None
    embedding: bool = False  # an embedding table (its lookup may be constant-folded by the exporter)
    folded: bool = False  # set by fold_weights when the weight was found and stored as integers

    @property
    def dequantized(self) -> np.ndarray:
        return self._expand(self.q.astype(np.float32))

    def _expand(self, q: np.ndarray) -> np.ndarray:
        if self.group_size:
            rows = q.reshape(-1, self.group_size) * self.scale[:, None].astype(np.float32)
            return rows.reshape(q.shape).astype(np.float32)
        if self.per_channel:
            shape = [-1] + [1] * (q.ndim - 1)
            return (q * self.scale.reshape(shape).astype(np.float32)).astype(np.float32)
        return (q * np.float32(self.scale.reshape(-1)[0])).astype(np.float32)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes() + str(a.shape).encode()).hexdigest()


def spec_digest(spec: WeightSpec) -> str:
    return _digest(spec.dequantized)


def constants_to_initializers(model: object) -> None:
    """Move tensor-valued ``Constant`` nodes, and ``Identity`` nodes of initializers (the exporter's way of
    sharing equal constants), into initializers, so passes see every constant where it is used."""
    import onnx

    graph = model.graph  # type: ignore[attr-defined]
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            graph.initializer.append(t)
            inits[t.name] = t
            continue
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            if len(t.dims) >= 1 and int(np.prod(t.dims)) > 16:
                graph.initializer.append(t)
                continue
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def fold_weights(model: object, specs: list[WeightSpec]) -> list[str]:
    """Replace float initializers equal to a spec's dequantized weight (or its transpose) by int + DQ."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    table: dict[str, tuple[WeightSpec, bool, str]] = {}  # digest -> (spec, transposed, the spec's own digest)
    same: dict[str, list[WeightSpec]] = {}  # a spec's digest -> every spec with that weight (tied weights)
    for spec in specs:
        deq = spec.dequantized
        digest = _digest(deq)
        table.setdefault(digest, (spec, False, digest))
        same.setdefault(digest, []).append(spec)
        if deq.ndim == 2:
            table.setdefault(_digest(deq.T), (spec, True, digest))
    new_inits, new_nodes, folded = [], [], []
    remaining = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2:
            remaining.append(init)
            continue
        arr = numpy_helper.to_array(init)
        hit = table.get(_digest(arr))
        if hit is None:
            remaining.append(init)
            continue
        spec, transposed, own = hit
        for twin in same[own]:
            twin.folded = True
        name = init.name
        q = spec.q.T if transposed else spec.q
        attrs: dict[str, Any] = {}
        if spec.group_size:
            out_ch, in_ch = spec.q.shape
            scale = spec.scale.reshape(out_ch, in_ch // spec.group_size)
            if transposed:
                scale = scale.T
            attrs = {"axis": 0 if transposed else 1, "block_size": spec.group_size}
        elif spec.per_channel:
            scale = spec.scale.reshape(-1)
            attrs = {"axis": 1 if transposed else 0}
        else:
            scale = np.asarray(spec.scale.reshape(-1)[0])
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        dtype = onnx.TensorProto.INT4 if spec.bits == 4 else onnx.TensorProto.INT8
        q_init = _int_tensor(f"{name}_quantized", np.ascontiguousarray(q), dtype)
        zp_init = _int_tensor(f"{name}_zero_point", np.zeros(scale.shape, dtype=np.int8), dtype)
        s_init = numpy_helper.from_array(scale, f"{name}_scale")
        new_inits += [q_init, s_init, zp_init]
        new_nodes.append(helper.make_node("DequantizeLinear", [q_init.name, s_init.name, zp_init.name], [name],
                                          name=f"{name}_DequantizeLinear", **attrs))
        folded.append(name)
    del graph.initializer[:]
    graph.initializer.extend(remaining + new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    return folded


def _int_tensor(name: str, values: np.ndarray, dtype: int) -> Any:
    import onnx
    from onnx import helper, numpy_helper

    if dtype == onnx.TensorProto.INT8:
        return numpy_helper.from_array(values.astype(np.int8), name)
    flat = values.astype(np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    nibbles = (flat.astype(np.uint8) & 0x0F).reshape(-1, 2)
    packed = (nibbles[:, 0] | (nibbles[:, 1] << 4)).astype(np.uint8)  # first element in the low nibble
    return helper.make_tensor(name, dtype, list(values.shape), packed.tobytes(), raw=True)


def _initializer_map(graph: object) -> dict[str, object]:
    return {i.name: i for i in graph.initializer}  # type: ignore[attr-defined]


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _splice(graph: Any, replaced: dict[int, list[Any]]) -> None:
    """Replace the node at each index of ``replaced`` by its list of nodes (an empty list deletes it)."""
    nodes = list(graph.node)
    del graph.node[:]
    for i, n in enumerate(nodes):
        graph.node.extend(replaced.get(i, [n]))


def _drop_unused_initializers(graph: Any, candidates: set[str] | None = None) -> None:
    """Remove initializers no node or graph output uses (only those in ``candidates`` when given)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used or (candidates is not None and t.name not in candidates)]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def scalar_qparams(model: object) -> None:
    """Reshape one-element scale/zero-point initializers of per-tensor Q/DQ nodes to scalars."""
    graph = model.graph  # type: ignore[attr-defined]
    inits = _initializer_map(graph)
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(a.name == "axis" for a in node.attribute) and _numel(inits.get(node.input[1])) != 1:
            continue
        for name in node.input[1:3]:
            t = inits.get(name)
            if t is not None and _numel(t) == 1 and len(t.dims) > 0:  # type: ignore[attr-defined]
                del t.dims[:]  # type: ignore[attr-defined]


def _numel(t: object | None) -> int:
    if t is None:
        return -1
    return int(np.prod(list(t.dims))) if len(t.dims) else 1  # type: ignore[attr-defined]


def quantize_biases(model: object) -> int:
    """Conv/Gemm with DQ'd input and weight: float bias -> INT32 + DQ (scale = s_x * s_w, zero point 0)."""
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    inits = _initializer_map(graph)
    producer = _producers(graph)
    done = 0
    extra_nodes = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            continue
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if "transA" in attrs and attrs["transA"].i or "alpha" in attrs and attrs["alpha"].f != 1.0 \
                    or "beta" in attrs and attrs["beta"].f != 1.0:
                continue
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        if any(a.name == "block_size" for a in dq_w.attribute):
            continue
        sx, sw = inits.get(dq_x.input[1]), inits.get(dq_w.input[1])
        if sx is None or sw is None or _numel(sx) != 1:
            continue
        bias_init = inits[node.input[2]]
        bias = numpy_helper.to_array(bias_init).astype(np.float64)  # type: ignore[arg-type]
        scale = (float(numpy_helper.to_array(sx).reshape(-1)[0])  # type: ignore[arg-type]
                 * numpy_helper.to_array(sw).astype(np.float64).reshape(-1))  # type: ignore[arg-type]
        if scale.size == 1:
            scale = np.full(bias.shape, scale[0])
        if np.any(scale <= 0):
            continue
        q = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = f"{node.input[2]}_q{done}"
        q_init = numpy_helper.from_array(q, f"{base}_int32")
        s_init = numpy_helper.from_array(scale.astype(np.float32), f"{base}_scale")
        z_init = numpy_helper.from_array(np.zeros(q.shape, np.int32), f"{base}_zero_point")
        graph.initializer.extend([q_init, s_init, z_init])
        extra_nodes.append(helper.make_node("DequantizeLinear", [q_init.name, s_init.name, z_init.name],
                                            [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=0))
        node.input[2] = f"{base}_dequantized"
        done += 1
    if extra_nodes:
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(extra_nodes + nodes)
        _drop_unused_initializers(graph)  # the float biases nobody uses any more
    return done


def gather_then_dequantize(model: object) -> int:
    """``DQ(table) -> Gather(rows)`` becomes ``Gather`` of the integer rows and their scales, then a multiply.

    A quantized embedding exported as ``DequantizeLinear`` of the whole INT8 table followed by the lookup
    makes ONNX Runtime dequantize every row on every run (all-MiniLM-L6-v2: 30,522 x 384 values, about a
    tenth of the INT8 model's run time) to use a few hundred. Looking up first and dequantizing only the
    rows used gives the same numbers (``q * scale`` per element, zero points are 0 for weights) and keeps
    the table INT8 in the file. Returns the number of lookups rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    inits = _initializer_map(graph)
    producer = _producers(graph)
    index = {id(n): i for i, n in enumerate(graph.node)}
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    done = 0
    replaced: dict[int, list[Any]] = {}
    dropped: set[str] = set()  # the old scales and zero points, removed when nothing else uses them
    for idx, node in enumerate(graph.node):
        if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        dq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or uses.get(dq.output[0], 0) != 1:
            continue
        table, scale, zero = (inits.get(dq.input[i]) if i < len(dq.input) else None for i in range(3))
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if table is None or scale is None or len(table.dims) != 2 or table.data_type != onnx.TensorProto.INT8:  # type: ignore[attr-defined]
            continue
        if zero is not None and np.any(numpy_helper.to_array(zero) != 0):  # type: ignore[arg-type]
            continue
        s = numpy_helper.to_array(scale).astype(np.float32)  # type: ignore[arg-type]
        if s.size == 1:
            rows = np.full((table.dims[0], 1), s.reshape(-1)[0], np.float32)  # type: ignore[attr-defined]
        elif axis == 0 and s.shape == (table.dims[0],):  # type: ignore[attr-defined]
            rows = s.reshape(-1, 1)
        else:
            continue
        base = f"{node.output[0]}_rows{done}"
        row_scales = numpy_helper.from_array(rows, f"{base}_scale")
        graph.initializer.append(row_scales)
        replaced[idx] = [
            helper.make_node("Gather", [dq.input[0], node.input[1]], [f"{base}_q"], name=f"{base}_gather_q"),
            helper.make_node("Gather", [row_scales.name, node.input[1]], [f"{base}_s"], name=f"{base}_gather_s"),
            helper.make_node("Cast", [f"{base}_q"], [f"{base}_f"], to=onnx.TensorProto.FLOAT, name=f"{base}_cast"),
            helper.make_node("Mul", [f"{base}_f", f"{base}_s"], [node.output[0]], name=f"{base}_mul"),
        ]
        replaced[index[id(dq)]] = []
        dropped.update(dq.input[1:])
        done += 1
    if done:
        _splice(graph, replaced)
        _drop_unused_initializers(graph, dropped)
    return done


SOFTMAX_FLOOR = -80.0  # exp(-80) ~ 1.8e-35: nothing next to the row's largest term, exp(0) = 1, in float32


def guard_masked_softmax(model: object) -> int:
    """``Softmax(scores + mask)`` becomes ``Softmax(max(x - rowmax(x), -80))``: the same numbers, faster.

    An attention mask adds a huge negative number (transformers use the float32 minimum) to padded
    positions. ONNX Runtime's CPU softmax takes a slow path for every exp argument below about -87 (seen:
    8-10x slower over a [8, 12, 128, 128] input with most positions masked; 30 ms of a 175 ms
    all-MiniLM-L6-v2 run at 128 tokens). Shifting by the row maximum and flooring at -80 keeps every
    exp argument in range; the floored terms weigh at most 1.8e-35 against a row sum of at least 1,
    below float32 resolution, so the probabilities are unchanged. Only softmaxes fed by an ``Add`` (the
    masking) are rewritten. Returns the number rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)  # type: ignore[attr-defined]
    if opset < 13:
        return 0
    producer = _producers(graph)
    floor = numpy_helper.from_array(np.array(SOFTMAX_FLOOR, np.float32), "quantplug_softmax_floor")
    done = 0
    replaced: dict[int, list[Any]] = {}
    for idx, node in enumerate(graph.node):
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        src = producer.get(node.input[0])
        if src is None or src.op_type != "Add":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        base = f"{node.output[0]}_guard{done}"
        if opset >= 18:
            axes = numpy_helper.from_array(np.array([axis], np.int64), f"{base}_axes")
            graph.initializer.append(axes)
            rowmax = helper.make_node("ReduceMax", [node.input[0], axes.name], [f"{base}_max"], keepdims=1,
                                      name=f"{base}_max")
        else:
            rowmax = helper.make_node("ReduceMax", [node.input[0]], [f"{base}_max"], axes=[axis], keepdims=1,
                                      name=f"{base}_max")
        replaced[idx] = [
            rowmax,
            helper.make_node("Sub", [node.input[0], f"{base}_max"], [f"{base}_shifted"], name=f"{base}_sub"),
            helper.make_node("Max", [f"{base}_shifted", floor.name], [f"{base}_floored"], name=f"{base}_floor"),
            helper.make_node("Softmax", [f"{base}_floored"], list(node.output), axis=axis, name=node.name or base),
        ]
        done += 1
    if done:
        graph.initializer.append(floor)
        _splice(graph, replaced)
    return done
