"""``prepare``: fold BatchNorm, swap layers for quantized wrappers and place activation quantizers.

Placement follows the target's scheme so that the exported QDQ graph is the one its runtime fuses:

- every quantized conv/linear gets a quantized input; every residual add gets both inputs quantized
  (TensorRT's rule: Q/DQ on the identity branch too); a concat gets one shared quantizer on all inputs
  (equal scales);
- for runtimes whose integer kernels need an output Q (ONNX Runtime: ``DQ -> Conv -> Q`` becomes
  ``QLinearConv``, see :func:`quantize_outputs`), the outputs of convs, linears and adds are quantized
  too, after a following ReLU/ReLU6 (which the runtime then drops);
- a tensor is quantized once, whatever the number of consumers; max-pool, flatten and reshape reuse the
  quantizer of their input (so the runtime runs them on integers).

With torch.fx (when the model traces) this is exact. Models that do not trace (every Hugging Face
model: their forward branches on inputs) are captured by running them once on the example inputs
(:mod:`quantplug.quant.capture`), with the same rules, plus the activation x activation matrix products
(attention's QK^T and AV). Only when that fails too (no example inputs, a forward that changes between
calls) does each conv/linear quantize its own input and output, and ``quantplug.nn.Add``/``Concat``
modules theirs; a warning line then says so, with the reason.
"""

from __future__ import annotations

import copy
import fnmatch
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from .. import nn as qnn
from ..recipe import QuantRecipe
from ..registry import Scheme
from .device import model_device
from .fold import fold_bn_by_execution, fold_bn_fx, fold_bn_sequential
from .modules import (
    QUANT_WRAPPERS,
    MultiheadAttention,
    QuantAdd,
    QuantConcat,
    QuantConv2d,
    QuantEmbedding,
    QuantLinear,
)
from .quantizer import ActQuantizer, WeightQuantizer

__all__ = ["PrepareReport", "fallback_message", "prepare", "quantize_outputs", "act_quantizers", "weight_layers", "layer_setting"]


@dataclass
class PrepareReport:
    traced: bool
    folded_bn: list[str] = field(default_factory=list)
    layers: dict[str, int] = field(default_factory=dict)  # quantized layer -> weight bits
    fp_layers: list[str] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    trace_error: str | None = None
    capture: str = "fx"  # how quantizers were placed: "fx", "execution" (capture.py) or "modules" (fallback)
    capture_error: str | None = None  # why capture by execution failed (then capture == "modules")
    attention_matmuls: int = 0  # activation x activation matrix products quantized (QK^T, AV)


def quantize_outputs(scheme: Scheme) -> bool:
    """Whether the runtime needs Q on conv/linear/add outputs to run them in integer kernels."""
    explicit = getattr(scheme, "quantize_outputs", None)
    return bool(explicit) if explicit is not None else scheme.activation_dtype == "uint8"


def layer_setting(recipe: QuantRecipe, name: str, default_bits: int) -> int | None:
    """Weight bits for a layer after overrides (exact name first, then glob patterns); None = keep FP."""
    override = recipe.layer_overrides.get(name)
    if override is None:
        for pattern, o in recipe.layer_overrides.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                override = o
                break
    if override is None:
        return default_bits
    if override.fp:
        return None
    return override.weight_bits or default_bits


def _act(name: str, recipe: QuantRecipe, scheme: Scheme) -> ActQuantizer:
    return ActQuantizer(name, scheme.activation_dtype, scheme.activation_symmetric, recipe.activation_bits,
                        recipe.histogram_bins)


def _weight_quantizer(module: nn.Module, bits: int, recipe: QuantRecipe, scheme: Scheme) -> WeightQuantizer:
    w = module.weight  # type: ignore[union-attr]
    assert isinstance(w, torch.Tensor)
    group = None
    if (recipe.granularity == "per-group" and bits == 4 and isinstance(module, nn.Linear)
            and module.in_features % recipe.group_size == 0):
        group = recipe.group_size
    per_channel = recipe.granularity != "per-tensor" or isinstance(module, nn.Embedding)
    rows = w.numel() // group if group else (w.shape[0] if per_channel else 1)
    # Embedding rows are looked up, never multiplied in integer kernels: they keep the full range.
    qmax = None if isinstance(module, nn.Embedding) else scheme.weight_range(bits)
    return WeightQuantizer(bits, per_channel=per_channel, group_size=group, out_channels=rows, qmax=qmax)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, QUANT_WRAPPERS + (ActQuantizer, qnn.Add, qnn.Concat)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _swap(root: nn.Module, recipe: QuantRecipe, scheme: Scheme, report: PrepareReport,
          with_input_quant: bool) -> None:
    for name, module in list(root.named_modules()):
        if isinstance(module, QUANT_WRAPPERS) or not isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
            continue
        default = 8 if isinstance(module, nn.Embedding) else recipe.weight_bits
        bits = layer_setting(recipe, name, default)
        if bits is None:
            report.fp_layers.append(name)
            continue
        wq = _weight_quantizer(module, bits, recipe, scheme)
        new: nn.Module
        if isinstance(module, nn.Embedding):
            new = QuantEmbedding.from_float(module, wq, name)
        else:
            iq = _act(f"{name}.input", recipe, scheme) if with_input_quant else None
            cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
            new = cls.from_float(module, wq, name, iq)  # type: ignore[attr-defined,arg-type]
            if iq is not None and quantize_outputs(scheme):
                object.__setattr__(new, "bias_input_quant", iq)
        _set_submodule(root, name, new)
        report.layers[name] = bits


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCS = (torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6)
_PASS_MODULES = (nn.MaxPool2d, nn.MaxPool1d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_PASS_FUNCS = (torch.flatten, torch.nn.functional.max_pool2d, torch.reshape)
_PASS_METHODS = ("view", "reshape", "flatten", "contiguous", "permute", "transpose")


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _RELU_MODULES)
    if node.op == "call_function":
        return node.target in _RELU_FUNCS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _passthrough_source(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    ok = ((node.op == "call_module" and isinstance(modules.get(str(node.target)), _PASS_MODULES))
          or (node.op == "call_function" and node.target in _PASS_FUNCS)
          or (node.op == "call_method" and node.target in _PASS_METHODS))
    if ok and node.args and isinstance(node.args[0], fx.Node):
        return node.args[0]
    return None


def _is_float_tensor(node: Any) -> bool:
    if not isinstance(node, fx.Node):
        return False
    meta = node.meta.get("tensor_meta")
    if meta is None:  # no shape propagation: trust the graph
        return node.op not in ("get_attr",) and not (node.op == "call_method" and node.target == "size")
    return bool(getattr(meta, "dtype", None) is not None and meta.dtype.is_floating_point)


def _place_fx(gm: fx.GraphModule, recipe: QuantRecipe, scheme: Scheme, report: PrepareReport) -> None:
    modules = dict(gm.named_modules())
    graph = gm.graph
    outputs: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "output":
            outputs.update(n for n in node.all_input_nodes)
    with_outputs = quantize_outputs(scheme)
    need: list[fx.Node] = []
    groups: list[list[fx.Node]] = []

    def want(n: Any) -> None:
        if _is_float_tensor(n) and n not in need:
            need.append(n)

    def want_output(n: fx.Node) -> None:
        while len(n.users) == 1 and _is_relu(next(iter(n.users)), modules):
            n = next(iter(n.users))
        if n not in outputs:
            want(n)

    for node in graph.nodes:
        mod = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(mod, QuantConv2d | QuantLinear):
            want(node.args[0])
            if with_outputs:
                want_output(node)
        elif (isinstance(mod, qnn.Add) or (node.op == "call_function" and node.target in (operator.add, torch.add))):
            args = [a for a in node.args[:2]]
            if mod is not None and layer_setting(recipe, str(node.target), 8) is None:
                continue
            if len(args) == 2 and all(_is_float_tensor(a) for a in args):
                for a in args:
                    want(a)
                if with_outputs:
                    want_output(node)
        elif isinstance(mod, qnn.Concat) or (node.op == "call_function" and node.target is torch.cat):
            tensors = list(node.args) if mod is not None else list(node.args[0])  # type: ignore[arg-type]
            tensors = [t for t in tensors if _is_float_tensor(t)]
            if tensors:
                groups.append(tensors)

    assigned: dict[fx.Node, str] = {}
    count = 0

    def new_quantizer(n: fx.Node) -> str:
        nonlocal count
        count += 1
        qname = f"act_quant_{count}_{n.name}"
        quantizer = _act(n.name, recipe, scheme)
        quantizer.model_input = n.op == "placeholder"
        gm.add_submodule(qname, quantizer)
        report.activations.append(n.name)
        return qname

    for group in groups:
        qname = new_quantizer(group[0])
        for t in group:
            assigned.setdefault(t, qname)
    for node in graph.nodes:
        if node in need and node not in assigned:
            src = _passthrough_source(node, modules)
            assigned[node] = assigned[src] if src is not None and src in assigned else new_quantizer(node)

    if with_outputs:  # the runtime will round biases to INT32 at input_scale * weight_scale: train that too
        for node in graph.nodes:
            mod = modules.get(str(node.target)) if node.op == "call_module" else None
            src = node.args[0] if node.args else None
            if isinstance(mod, QuantConv2d | QuantLinear) and isinstance(src, fx.Node) and src in assigned:
                object.__setattr__(mod, "bias_input_quant", gm.get_submodule(assigned[src]))

    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node, qname in assigned.items():
        anchor = placeholders[-1] if node.op == "placeholder" else node
        with graph.inserting_after(anchor):
            qn = graph.call_module(qname, (node,))
        node.replace_all_uses_with(qn, delete_user_cb=_not(qn))
    graph.lint()
    gm.recompile()


def _not(target: fx.Node) -> Any:
    def keep(user: fx.Node) -> bool:
        return user is not target

    return keep


def _wrap_modules(model: nn.Module, recipe: QuantRecipe, scheme: Scheme, report: PrepareReport) -> None:
    with_outputs = quantize_outputs(scheme)
    for name, module in list(model.named_modules()):
        if not name or layer_setting(recipe, name, 8) is None:
            continue
        if isinstance(module, qnn.Add):
            out = _act(f"{name}.output", recipe, scheme) if with_outputs else None
            _set_submodule(model, name, QuantAdd(_act(f"{name}.a", recipe, scheme),
                                                 _act(f"{name}.b", recipe, scheme), out))
        elif isinstance(module, qnn.Concat):
            _set_submodule(model, name, QuantConcat(module.dim, _act(f"{name}.inputs", recipe, scheme)))


def _prepare_untraced(model: nn.Module, recipe: QuantRecipe, scheme: Scheme,
                      example_inputs: tuple[torch.Tensor, ...] | None, trace_error: str | None
                      ) -> tuple[PrepareReport, nn.Module]:
    """Capture by execution (:mod:`quantplug.quant.capture`); failing that, module wrappers, loudly."""
    from .capture import CaptureError, capture

    folded = fold_bn_sequential(model)
    if example_inputs is not None:
        model, more = fold_bn_by_execution(model, example_inputs)
        folded += more
        candidate = copy.deepcopy(model)
        report = PrepareReport(traced=False, trace_error=trace_error, capture="execution", folded_bn=folded)
        try:
            _swap(candidate, recipe, scheme, report, with_input_quant=False)
            report.activations, captured = capture(candidate, example_inputs, lambda n: _act(n, recipe, scheme),
                                                   quantize_outputs(scheme))
            report.attention_matmuls = captured.matmuls
            return report, candidate
        except CaptureError as e:
            capture_error = str(e)
    else:
        capture_error = "no example inputs to run the model on"
    report = PrepareReport(traced=False, trace_error=trace_error, capture="modules", folded_bn=folded,
                           capture_error=capture_error)
    _swap(model, recipe, scheme, report, with_input_quant=True)
    _wrap_modules(model, recipe, scheme, report)
    if quantize_outputs(scheme):
        layers = [m for m in model.modules() if isinstance(m, QuantConv2d | QuantLinear)]
        if layers and isinstance(layers[-1], QuantLinear):  # the head's logits stay float (QGemm has a float output)
            layers.pop()
        for m in layers:
            m.output_quant = _act(f"{m.qname}.output", recipe, scheme)
    report.activations = [q.qname for q in act_quantizers(model)]
    warnings.warn(fallback_message(type(model).__name__, report), UserWarning, stacklevel=3)
    return report, model


def fallback_message(model_name: str, report: PrepareReport) -> str:
    """The one line that says placement fell back to per-layer quantizers, why, and what it costs."""
    why = report.capture_error or report.trace_error or "unknown"
    return (f"could not capture {model_name}'s graph ({why.splitlines()[0][:200]}); falling back to per-layer "
            "quantizers: each conv/linear quantizes its own input and output, so the runtime still runs them "
            "in integer, but ReLU/add/concat between layers and attention matrix products stay float "
            "(slower than a captured graph and less accurate); pass example inputs the model runs on")


def _decompose_attention(model: nn.Module) -> None:
    """Each ``nn.MultiheadAttention`` becomes explicit linears and matmuls (same results) that get quantized."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention) and MultiheadAttention.supports(module) and name:
            _set_submodule(model, name, MultiheadAttention(module))


def prepare(model: nn.Module, recipe: QuantRecipe, scheme: Scheme,
            example_inputs: tuple[torch.Tensor, ...] | None = None) -> nn.Module:
    """A BN-folded copy of ``model`` with fake quantizers in ``scheme`` (not yet calibrated)."""
    model = copy.deepcopy(model).eval()
    _decompose_attention(model)
    device = model_device(model)
    try:
        gm: fx.GraphModule | None = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
        trace_error = None
    except Exception as e:  # not traceable: fall back to module-level placement
        gm, trace_error = None, f"{type(e).__name__}: {e}"
    if gm is not None:
        report = PrepareReport(traced=True)
        report.folded_bn = fold_bn_fx(gm)
        if example_inputs is not None:
            try:
                from torch.fx.passes.shape_prop import ShapeProp

                with torch.no_grad():
                    ShapeProp(gm).propagate(*example_inputs)
            except Exception:  # shapes are only a hint
                pass
        _swap(gm, recipe, scheme, report, with_input_quant=False)
        _place_fx(gm, recipe, scheme, report)
        out: nn.Module = gm
    else:
        report, out = _prepare_untraced(model, recipe, scheme, example_inputs, trace_error)
    out.to(device)  # new quantizers (scale, zero point, clip ratio buffers) join the model's device
    out.quantplug_report = report  # type: ignore[assignment]
    out.quantplug_scheme = scheme  # type: ignore[assignment]
    return out


def act_quantizers(model: nn.Module) -> list[ActQuantizer]:
    seen: list[ActQuantizer] = []
    for m in model.modules():
        if isinstance(m, ActQuantizer) and all(m is not s for s in seen):
            seen.append(m)
    return seen


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, QUANT_WRAPPERS)]
