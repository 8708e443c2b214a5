"""``quantplug.quantize``: prepare a model in the target's scheme and run the recipe's method."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..recipe import QuantRecipe
from ..registry import Registry, build_registry, declared
from .calibrate import as_inputs, compute_ranges
from .context import QuantContext, peek
from .device import model_device, to_device
from .prepare import prepare

__all__ = ["compare_calibrators", "quantize", "scheme_for"]


def scheme_for(recipe: QuantRecipe, registry: Registry) -> Any:
    """The target's scheme, specialised for the recipe's serving CPU (``recipe.cpu``, see quantplug.cpu)."""
    from ..cpu import resolve_cpu

    scheme = registry.backend(recipe.target).scheme
    if getattr(scheme, "cpu_sensitive", False):
        scheme = scheme.for_cpu(resolve_cpu(recipe.cpu))
    if recipe.weight_bits == 4 and not scheme.int4_weights:
        raise ConfigError(f"target {recipe.target!r} cannot run INT4 weights; use --weight-bits 8")
    return scheme


def _workload_data(recipe: QuantRecipe, workload: Any, calib_data: Any, train_data: Any) -> tuple[Any, Any]:
    if workload is not None:
        if calib_data is None:
            calib_data = workload.calibration_batches(recipe.calib_batch_size, seed=recipe.seed)
        if train_data is None and workload.train_batches is not None:
            size = recipe.train_batch_size

            def train_data(epoch: int) -> Any:
                return workload.train_batches(size, seed=recipe.seed + epoch)

    return calib_data, train_data


def quantize(model: nn.Module, recipe: QuantRecipe, calib_data: Any = None, train_data: Any = None, *,
             workload: Any = None, registry: Registry | None = None, progress: bool = True,
             loss_fn: Any = None, train_lr: float | None = None) -> nn.Module:
    """Quantize ``model`` with ``recipe``; returns a fake-quant module in the target's scheme.

    ``calib_data``: iterable of input batches (tensor or tuple of tensors), or None to use ``workload``'s.
    ``train_data``: for training methods, ``epoch -> iterable of ((inputs...), labels)`` or a re-iterable
    of such pairs; None to use ``workload``'s. ``loss_fn(outputs, labels)``: the task loss (default: the
    workload's, else cross-entropy). ``train_lr``: the FP32 training LR (default: the workload's, else 1e-3).
    The input model is not modified.
    """
    from ..cpu import resolve_cpu

    registry = registry or build_registry()
    workload = declared("workloads", workload)  # optional members read as their declared defaults
    recipe = recipe.replace(cpu=resolve_cpu(recipe.cpu))  # recipe.json records the CPU it is exact on
    method = registry.method(recipe.method)
    registry.calibrator(recipe.calibrator)  # unknown names fail before any work
    scheme = scheme_for(recipe, registry)
    calib_data, train_data = _workload_data(recipe, workload, calib_data, train_data)
    needs_calibration = method.needs_calibration
    example: tuple[torch.Tensor, ...] | None = None
    if calib_data is not None:
        source = calib_data() if callable(calib_data) else calib_data
        first, calib_data = peek(source)
        example = to_device(as_inputs(first), model_device(model))
    elif needs_calibration:
        from ..errors import CalibrationError

        raise CalibrationError(f"method {method.name!r} needs calibration data; pass calib_data or a workload")
    if method.needs_training_data and train_data is None:
        raise ConfigError(f"method {method.name!r} fine-tunes and needs training data; pass train_data or a workload")
    if method.needs_labels and workload is not None and not workload.has_labels:
        raise ConfigError(f"method {method.name!r} needs labels but workload {workload.name!r} has none; use qad")
    if example is not None:
        _check_runs(model, example)
    torch.manual_seed(recipe.seed)
    teacher = copy.deepcopy(model).eval()
    prepare_fn = method.prepare or prepare
    prepared = prepare_fn(model, recipe, scheme, example)
    lr = train_lr if train_lr is not None else float((workload.train_lr if workload is not None else None) or 1e-3)
    ctx = QuantContext(recipe=recipe, scheme=scheme, registry=registry, teacher=teacher, calib_data=calib_data,
                       train_data=train_data, workload=workload, progress=progress, train_lr=lr, loss_fn=loss_fn)
    result = method.apply(prepared, recipe, ctx)
    result.eval()
    result.quantplug_recipe = recipe  # type: ignore[assignment]
    result.quantplug_log = ctx.log  # type: ignore[assignment]
    return result


def _check_runs(model: nn.Module, example: tuple[torch.Tensor, ...]) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example)
    except Exception as e:
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
                           for t in example)
        raise ConfigError(f"the FP32 model fails on the first calibration batch (inputs: {shapes}): "
                          f"{type(e).__name__}: {e}; the data must yield batches shaped like the model's inputs") from e
    finally:
        model.train(was_training)


def compare_calibrators(model: nn.Module, recipe: QuantRecipe, calib_data: Any, names: list[str] | None = None, *,
                        registry: Registry | None = None, progress: bool = True) -> dict[str, nn.Module]:
    """PTQ models for several calibrators from ONE pass over ``calib_data`` (shared histograms)."""
    from .calibrate import apply_ranges, collect_histograms, search_weight_clipping

    registry = registry or build_registry()
    scheme = scheme_for(recipe, registry)
    names = names or registry.names("calibrators")
    first, data = peek(calib_data() if callable(calib_data) else calib_data)
    base = prepare(model, recipe, scheme, to_device(as_inputs(first), model_device(model)))
    hists = collect_histograms(base, data, recipe.calib_batches, progress)
    out: dict[str, nn.Module] = {}
    for name in names:
        ctx = QuantContext(recipe=recipe.replace(calibrator=name), scheme=scheme, registry=registry, teacher=model)
        m = copy.deepcopy(base)
        apply_ranges(m, compute_ranges(m, hists, ctx.calibrator()))
        search_weight_clipping(m, bits=(4,))
        m.quantplug_recipe = ctx.recipe  # type: ignore[assignment]
        out[name] = m.eval()
    return out
