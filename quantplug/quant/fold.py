"""Fold BatchNorm into the preceding convolution or linear layer (before any quantizer is inserted).

With torch.fx (when the model traces) every ``conv -> bn`` edge is found wherever it is; otherwise the
adjacent pairs inside ``nn.Sequential`` containers are folded and the BatchNorm becomes ``Identity``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

__all__ = ["fold_bn_by_execution", "fold_bn_fx", "fold_bn_sequential", "fold_into"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Rewrite ``layer``'s weight and bias so that ``layer(x) == bn(layer(x))`` in eval mode."""
    assert bn.running_mean is not None and bn.running_var is not None
    w: Any = layer.weight
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    factor = gamma / torch.sqrt(bn.running_var + bn.eps)
    if isinstance(layer, nn.Conv2d | nn.Conv1d | nn.Conv3d) and layer.transposed:  # pragma: no cover
        raise ValueError("transposed convolutions are not folded")
    shape = [-1] + [1] * (w.dim() - 1)
    w.mul_(factor.reshape(shape))  # type: ignore[operator]
    bias: Any = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * factor + beta
    layer.bias = nn.Parameter(new_bias.detach().clone())  # type: ignore[union-attr]


def fold_bn_fx(gm: fx.GraphModule) -> list[str]:
    """Fold every BatchNorm whose input is a conv/linear used only by it; returns the folded BN names."""
    modules = dict(gm.named_modules())
    folded: list[str] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module"
                and isinstance(modules.get(prev.target), _FOLDABLE) and len(prev.users) == 1):
            continue
        if modules[node.target].training or not modules[node.target].track_running_stats:
            continue
        fold_into(modules[prev.target], modules[node.target])
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded.append(str(node.target))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def fold_bn_sequential(model: nn.Module) -> list[str]:
    """Fold adjacent ``(conv|linear, batchnorm)`` pairs inside ``nn.Sequential`` containers."""
    folded: list[str] = []
    for cname, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for a, b in zip(names, names[1:], strict=False):
            first, second = container._modules[a], container._modules[b]
            if isinstance(first, _FOLDABLE) and isinstance(second, _BN) and second.track_running_stats:
                fold_into(first, second)
                container._modules[b] = nn.Identity()
                folded.append(f"{cname}.{b}" if cname else b)
    return folded


def fold_bn_by_execution(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, list[str]]:
    """Fold BatchNorms that, when the model runs, consume exactly the output tensor of a conv/linear.

    For models torch.fx cannot trace. The fold is kept only if the model's output is unchanged on
    ``example_inputs`` (a conv output also used elsewhere would make it wrong); otherwise the model is
    returned unfolded.
    """
    import copy

    produced: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def after_layer(mod: nn.Module, args: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            produced[id(out)] = names[mod]

    def before_bn(mod: nn.Module, args: tuple[object, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and id(args[0]) in produced:
            pairs.append((produced[id(args[0])], names[mod]))

    for m in model.modules():
        if isinstance(m, _FOLDABLE):
            handles.append(m.register_forward_hook(after_layer))
        elif isinstance(m, _BN) and m.track_running_stats:
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            reference = model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    uses: dict[str, int] = {}
    for layer, _ in pairs:
        uses[layer] = uses.get(layer, 0) + 1
    pairs = [(a, b) for a, b in pairs if uses[a] == 1]
    if not pairs:
        return model, []
    folded_model = copy.deepcopy(model)
    for layer, bn in dict.fromkeys(pairs):
        fold_into(folded_model.get_submodule(layer), folded_model.get_submodule(bn))  # type: ignore[arg-type]
        parent, _, attr = bn.rpartition(".")
        setattr(folded_model.get_submodule(parent) if parent else folded_model, attr, nn.Identity())
    with torch.no_grad():
        out = folded_model(*example_inputs)
    ok = all(torch.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(_tensors(reference), _tensors(out), strict=False))
    return (folded_model, [b for _, b in pairs]) if ok else (model, [])


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, tuple | list):
        return [t for o in out for t in _tensors(o)]
    return []
