"""Capture by execution: place activation quantizers on models torch.fx cannot trace.

Models written by others (every Hugging Face model tried) branch on their inputs, which torch.fx
symbolic tracing refuses. Instead, the model is *run* once on the example inputs while a
``TorchFunctionMode`` and module hooks record its dataflow: every call of a leaf module (a
``torch.nn`` layer or a quantplug wrapper) and every torch function or tensor method called from the
model's own Python code (``torch.matmul``, ``+``, ``torch.cat``, ``view`` ...), with which recorded
tensor each one consumed. The placement rules of :mod:`quantplug.quant.prepare` then run on that
recorded graph exactly as on an fx graph.

The quantizers stay in the model (``quantplug_acts``, a ``ModuleDict`` on the root) and are applied
by the same hooks and mode at run time, at *sites*: "the output of the n-th call of module M" or "the
output of the k-th ``matmul`` called from the n-th call of module M". So the prepared model is still
the user's module (with its quantized conv/linear wrappers): PTQ calibrates it, QAT and QAD train it,
and the TorchScript ONNX exporter records the fake-quant ops as QuantizeLinear/DequantizeLinear.

A site that is not met again at run time, or an output that changes with every quantizer off, makes
:func:`capture` raise :class:`CaptureError`; ``prepare`` then falls back to module wrappers, loudly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import nn as qnn
from .modules import QUANT_WRAPPERS, QuantConv2d, QuantLinear
from .quantizer import ActQuantizer, WeightQuantizer

__all__ = ["CaptureError", "CaptureReport", "Event", "capture", "is_captured"]

ACTS_ATTR = "quantplug_acts"

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCS = ("relu", "relu_", "relu6")
_PASS_MODULES = (nn.MaxPool2d, nn.MaxPool1d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_PASS_FUNCS = ("view", "reshape", "flatten", "contiguous", "permute", "transpose", "max_pool2d", "dropout", "pad")
_ADD_FUNCS = ("add", "__add__", "__radd__", "__iadd__", "add_")
_CAT_FUNCS = ("cat", "concat", "concatenate")
_MATMUL_FUNCS = ("matmul", "__matmul__", "bmm")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORM_MODULES = (nn.LayerNorm, nn.GroupNorm)
_NORM_FUNCS = ("layer_norm", "group_norm", "rms_norm")
# Above this magnitude an operand is a mask (-inf, finfo.min), not an activation worth 256 levels.
_MASK_MAGNITUDE = 1e4


class CaptureError(RuntimeError):
    """The model could not be captured by execution (the reason is the message)."""


@dataclass
class Event:
    """One recorded call: a leaf module's output, a function's output, or a model input."""

    index: int
    key: str  # the site key (where a quantizer for this output would be applied)
    kind: str  # "input", "module" or "function"
    name: str  # module class name or function name
    module: nn.Module | None
    inputs: list[int]  # events whose tensors it consumed (data operands, in order; -1 = not recorded)
    float_out: bool
    shape: tuple[int, ...]
    from_input: bool  # computed from the model's inputs (an activation, not a constant)
    small: bool  # finite and below the mask magnitude
    users: list[int] = field(default_factory=list)


@dataclass
class CaptureReport:
    events: int
    sites: int
    matmuls: int  # activation x activation matrix products quantized (attention QK^T, AV)


def _fn_name(func: Any) -> str:
    name = getattr(func, "__name__", None)
    if name == "__get__":  # a tensor property (``x.mT``): name it by its property
        qual = getattr(func, "__qualname__", "") or ""
        name = qual.split(".")[-2] if "." in qual else qual
    return str(name or type(func).__name__)


def _is_leaf(m: nn.Module) -> bool:
    if isinstance(m, QUANT_WRAPPERS + (ActQuantizer, WeightQuantizer, qnn.Add, qnn.Concat)):
        return True
    return type(m).__module__.startswith("torch.nn") and not isinstance(m, _CONTAINERS)


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, tuple | list):
        for v in x:
            yield from _tensors(v)


def _replace(out: Any, fn: Callable[[str, torch.Tensor], torch.Tensor], key: str) -> Any:
    """``out`` with each tensor at site ``key`` (``key[j]`` inside a tuple/list) passed through ``fn``."""
    if isinstance(out, torch.Tensor):
        return fn(key, out)
    if isinstance(out, tuple | list) and not hasattr(out, "_fields"):
        items = [fn(f"{key}[{j}]", v) if isinstance(v, torch.Tensor) else v for j, v in enumerate(out)]
        return type(out)(items)
    return out


class _Frame:
    __slots__ = ("call", "counts", "leaf", "path")

    def __init__(self, path: str, call: int, leaf: bool) -> None:
        self.path, self.call, self.leaf = path, call, leaf
        self.counts: dict[str, int] = {}

    @property
    def key(self) -> str:
        return f"{self.path or '<root>'}#{self.call}"


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> event index
        self.keep: list[torch.Tensor] = []  # recorded tensors stay alive, so their ids stay unique
        self.outputs: set[int] = set()

    def _operands(self, args: Any) -> list[int]:
        return [self.producer.get(id(t), -1) for t in _tensors(args)]

    def add(self, key: str, kind: str, name: str, module: nn.Module | None, args: Any, out: Any) -> None:
        inputs = self._operands(args)
        outs = list(_tensors(out)) if isinstance(out, tuple | list) else [out] if isinstance(out, torch.Tensor) else []
        single = isinstance(out, torch.Tensor)
        for j, t in enumerate(outs):
            if not isinstance(t, torch.Tensor):
                continue
            ev = Event(len(self.events), key if single else f"{key}[{j}]", kind, name, module, inputs,
                       t.is_floating_point(), tuple(t.shape),
                       kind == "input" or any(i >= 0 and self.events[i].from_input for i in inputs),
                       _small(t))
            for i in inputs:
                if i >= 0:
                    self.events[i].users.append(ev.index)
            self.events.append(ev)
            self.producer[id(t)] = ev.index
            self.keep.append(t)


def _small(t: torch.Tensor) -> bool:
    if not t.is_floating_point() or t.numel() == 0:
        return True
    with torch.no_grad():
        m = float(t.detach().abs().max())
    return math.isfinite(m) and m < _MASK_MAGNITUDE


class _State:
    """What the hooks and the mode share: the call stack, per-forward counters, the sites."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.calls: dict[str, int] = {}
        self.sites: dict[str, ActQuantizer] = {}
        self.hits: set[str] = set()
        self.recorder: _Recorder | None = None
        self.busy = 0
        self.mode: _Mode | None = None

    def quantize(self, key: str, t: torch.Tensor) -> torch.Tensor:
        q = self.sites.get(key)
        if q is None or not t.is_floating_point():  # ids and masks are never activations to quantize
            return t
        self.hits.add(key)
        self.busy += 1
        try:
            return q(t)
        finally:
            self.busy -= 1

    def record(self, key: str, kind: str, name: str, module: nn.Module | None, args: Any, out: Any) -> None:
        if self.recorder is None:
            return
        self.busy += 1  # the recorder's own torch calls are not the model's
        try:
            self.recorder.add(key, kind, name, module, args, out)
        finally:
            self.busy -= 1

    def push(self, path: str, leaf: bool) -> _Frame:
        n = self.calls.get(path, 0)
        self.calls[path] = n + 1
        frame = _Frame(path, n, leaf)
        self.stack.append(frame)
        return frame

    def on_function(self, func: Any, args: Any, kwargs: Any, out: Any) -> Any:
        if self.busy or not self.stack or self.stack[-1].leaf:
            return out
        if not (isinstance(out, torch.Tensor) or (isinstance(out, tuple | list) and any(
                isinstance(o, torch.Tensor) for o in out))):
            return out
        frame = self.stack[-1]
        name = _fn_name(func)
        k = frame.counts.get(name, 0)
        frame.counts[name] = k + 1
        key = f"{frame.key}/{name}#{k}"
        self.record(key, "function", name, None, (args, kwargs), out)
        return _replace(out, self.quantize, key) if self.sites else out


class _Mode(TorchFunctionMode):
    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        return self.state.on_function(func, args, kwargs, func(*args, **kwargs))


class _Enter:
    """Forward pre-hook of every module: push a frame; a leaf module's inputs are recorded on exit."""

    def __init__(self, state: _State, path: str, leaf: bool) -> None:
        self.state, self.path, self.leaf = state, path, leaf

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.state.push(self.path, self.leaf)
        if self.leaf and self.state.recorder is not None:
            module._quantplug_args = args  # type: ignore[assignment]


class _Exit:
    def __init__(self, state: _State) -> None:
        self.state = state

    def __call__(self, module: nn.Module, args: Any, out: Any) -> Any:
        frame = self.state.stack.pop()
        if not frame.leaf or self.state.busy:
            return None
        if self.state.recorder is not None:
            self.state.record(frame.key, "module", type(module).__name__, module,
                              module.__dict__.pop("_quantplug_args", ()), out)
        if self.state.sites:
            return _replace(out, self.state.quantize, frame.key)
        return None


class _RootEnter:
    def __init__(self, state: _State) -> None:
        self.state = state

    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        st = self.state
        if st.stack:  # re-entered (the model calls itself): nothing new
            st.push("", False)
            return None
        st.calls = {}
        st.push("", False)
        st.mode = _Mode(st)
        st.mode.__enter__()
        if st.recorder is not None:
            for i, a in enumerate(args):
                if isinstance(a, torch.Tensor):
                    st.record(f"input/{i}", "input", f"input{i}", None, (), a)
            for k, v in kwargs.items():
                if isinstance(v, torch.Tensor):
                    st.record(f"input/{k}", "input", k, None, (), v)
        if not st.sites:
            return None
        new_args = tuple(st.quantize(f"input/{i}", a) if isinstance(a, torch.Tensor) else a
                         for i, a in enumerate(args))
        new_kwargs = {k: st.quantize(f"input/{k}", v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return new_args, new_kwargs


class _RootExit:
    def __init__(self, state: _State) -> None:
        self.state = state

    def __call__(self, module: nn.Module, args: Any, out: Any) -> None:
        st = self.state
        if st.stack:
            st.stack.pop()
        if st.stack:
            return
        if st.mode is not None:
            st.mode.__exit__(None, None, None)
            st.mode = None
        if st.recorder is not None:
            st.recorder.outputs = {st.recorder.producer[id(t)] for t in _tensors(_fields(out))
                                   if id(t) in st.recorder.producer}


def _fields(out: Any) -> Any:
    if isinstance(out, dict):  # transformers' ModelOutput is an OrderedDict
        return list(out.values())
    return out


def _install(model: nn.Module) -> _State:
    state = _State()
    model.register_forward_pre_hook(_RootEnter(state), with_kwargs=True)
    model.register_forward_hook(_RootExit(state), always_call=True)
    skip: list[str] = []
    for path, m in model.named_modules():
        if not path or any(path.startswith(p + ".") for p in skip):
            continue
        leaf = _is_leaf(m)
        if isinstance(m, ActQuantizer):
            skip.append(path)
            continue
        m.register_forward_pre_hook(_Enter(state, path, leaf))
        m.register_forward_hook(_Exit(state), always_call=True)
        if leaf:
            skip.append(path)
    return state


def _remove_hooks(model: nn.Module) -> None:
    for m in model.modules():
        for hooks, extras in ((m._forward_pre_hooks, (m._forward_pre_hooks_with_kwargs,)),
                              (m._forward_hooks, (m._forward_hooks_with_kwargs, m._forward_hooks_always_called))):
            for k in [k for k, h in hooks.items() if isinstance(h, _Enter | _Exit | _RootEnter | _RootExit)]:
                del hooks[k]
                for extra in extras:
                    extra.pop(k, None)


def is_captured(model: nn.Module) -> bool:
    return hasattr(model, ACTS_ATTR)


def record(model: nn.Module, example_inputs: tuple[Any, ...]) -> tuple[list[Event], set[int]]:
    """Run ``model`` once and return its recorded events and the indices of the events it returns."""
    state = _install(model)
    state.recorder = _Recorder()
    try:
        with torch.no_grad():
            model(*example_inputs)
    except Exception as e:
        raise CaptureError(f"running the model to record it failed: {type(e).__name__}: {e}") from e
    finally:
        _remove_hooks(model)
        for m in model.modules():
            m.__dict__.pop("_quantplug_args", None)
    return state.recorder.events, state.recorder.outputs


Want = Callable[[str], ActQuantizer]


def place(events: list[Event], outputs: set[int], with_outputs: bool) -> tuple[list[int], list[list[int]], int]:
    """The placement rules on a recorded graph: (events whose output to quantize, shared groups, matmuls)."""
    need: list[int] = []
    groups: list[list[int]] = []
    matmuls = 0

    def activation(i: int) -> bool:
        return i >= 0 and events[i].float_out and events[i].from_input

    def want(i: int) -> None:
        if activation(i) and i not in need:
            need.append(i)

    def is_relu(ev: Event) -> bool:
        return isinstance(ev.module, _RELU_MODULES) or (ev.kind == "function" and ev.name in _RELU_FUNCS)

    def transparent(ev: Event) -> bool:  # a folded BatchNorm (Identity) or an eval-mode dropout
        return isinstance(ev.module, nn.Identity | nn.Dropout) or (ev.kind == "function" and ev.name == "dropout")

    def want_output(i: int) -> None:
        while len(events[i].users) == 1 and (is_relu(events[events[i].users[0]])
                                              or transparent(events[events[i].users[0]])):
            i = events[i].users[0]
        if i not in outputs:
            want(i)

    def is_add(ev: Event) -> bool:
        ops = ev.inputs[:2]
        return ((isinstance(ev.module, qnn.Add) or (ev.kind == "function" and ev.name in _ADD_FUNCS))
                and len(ops) == 2 and all(activation(i) and events[i].small for i in ops)
                and events[ops[0]].shape == events[ops[1]].shape)

    def is_norm(ev: Event) -> bool:
        return isinstance(ev.module, _NORM_MODULES) or (ev.kind == "function" and ev.name in _NORM_FUNCS)

    feeds_memo: dict[int, bool] = {}

    def add_feeds_integer(i: int) -> bool:
        """Whether an add's output reaches anything but a normalization (a transformer's residual stream
        only feeds LayerNorms and the next residual add: quantizing it costs Q/DQ and buys no integer op)."""
        if i not in feeds_memo:
            feeds_memo[i] = False
            frontier, result = list(events[i].users), False
            while frontier and not result:
                u = events[frontier.pop()]
                if is_relu(u) or transparent(u) or _passthrough_source(u) is not None:
                    frontier.extend(u.users)
                elif is_add(u):
                    result = add_feeds_integer(u.index)
                else:
                    result = not is_norm(u)
            feeds_memo[i] = result
        return feeds_memo[i]

    for ev in events:
        if isinstance(ev.module, QuantConv2d | QuantLinear):
            if ev.inputs:
                want(ev.inputs[0])
            # ONNX Runtime's integer conv needs Q on its output (DQ -> Conv -> Q = QLinearConv); its integer
            # matmuls do not (MatMulIntegerToFloat, QGemm with a float output): a linear's output is
            # quantized only where a consumer wants it, never for a float GELU or LayerNorm alone.
            if with_outputs and isinstance(ev.module, QuantConv2d):
                want_output(ev.index)
        elif is_add(ev):
            ops = ev.inputs[:2]
            if not with_outputs or add_feeds_integer(ev.index):
                for i in ops:
                    want(i)
                if with_outputs:
                    want_output(ev.index)
        elif isinstance(ev.module, qnn.Concat) or (ev.kind == "function" and ev.name in _CAT_FUNCS):
            group = [i for i in ev.inputs if activation(i)]
            if group:
                groups.append(group)
        elif ev.kind == "function" and ev.name in _MATMUL_FUNCS:
            ops = ev.inputs[:2]
            if len(ops) == 2 and all(activation(i) and events[i].small for i in ops):
                for i in ops:
                    want(i)
                matmuls += 1
    return need, groups, matmuls


def _passthrough_source(ev: Event) -> int | None:
    ok = isinstance(ev.module, _PASS_MODULES) or (ev.kind == "function" and ev.name in _PASS_FUNCS)
    return ev.inputs[0] if ok and ev.inputs and ev.inputs[0] >= 0 else None


def capture(model: nn.Module, example_inputs: tuple[Any, ...], make_quantizer: Want, with_outputs: bool
            ) -> tuple[list[str], CaptureReport]:
    """Place activation quantizers on ``model`` (in place) by running it; returns their names and a report.

    ``make_quantizer(name)`` builds one activation quantizer in the target's scheme.
    """
    events, outputs = record(model, example_inputs)
    need, groups, matmuls = place(events, outputs, with_outputs)
    acts = nn.ModuleDict()
    assigned: dict[int, ActQuantizer] = {}
    names: list[str] = []

    def label(ev: Event) -> str:
        return ev.key.replace("<root>#0", "").strip("/")

    def new_quantizer(ev: Event) -> ActQuantizer:
        q = make_quantizer(label(ev))
        q.model_input = ev.kind == "input"
        acts[f"q{len(acts)}"] = q
        names.append(q.qname)
        return q

    for group in groups:
        q = new_quantizer(events[group[0]])
        for i in group:
            assigned.setdefault(i, q)
    for i in sorted(need):
        if i in assigned:
            continue
        src = _passthrough_source(events[i])
        while src is not None and src not in assigned:  # view -> transpose -> ...: back to a quantized tensor
            src = _passthrough_source(events[src])
        assigned[i] = assigned[src] if src is not None else new_quantizer(events[i])
    if with_outputs:  # the runtime rounds biases to INT32 at input_scale * weight_scale: train that too
        for ev in events:
            if isinstance(ev.module, QuantConv2d | QuantLinear) and ev.inputs and ev.inputs[0] in assigned:
                if getattr(ev.module, "bias_input_quant", None) is None:
                    object.__setattr__(ev.module, "bias_input_quant", assigned[ev.inputs[0]])
    model.add_module(ACTS_ATTR, acts)
    state = _install(model)
    state.sites = {events[i].key: q for i, q in assigned.items()}
    _check(model, state, example_inputs)
    return names, CaptureReport(events=len(events), sites=len(state.sites), matmuls=matmuls)


def _check(model: nn.Module, state: _State, example_inputs: tuple[Any, ...]) -> None:
    """Every site is met again, and with the quantizers off the output is the recorded model's."""
    with torch.no_grad():
        model(*example_inputs)
    missed = sorted(set(state.sites) - state.hits)
    if missed:
        raise CaptureError(f"{len(missed)} of {len(state.sites)} quantizer sites were not met on a second run "
                           f"(first: {missed[0]}); the model's forward changes between calls")
    state.hits.clear()
