"""The calibration driver: one pass over the data fills every activation's histogram, then any
calibrator turns the same histograms into ranges (so comparing all four costs one pass)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import CalibrationError
from .device import model_device, to_device
from .histogram import Histogram, max_range
from .modules import QUANT_WRAPPERS
from .prepare import act_quantizers

__all__ = ["MIN_RECOMMENDED_SAMPLES", "apply_ranges", "as_inputs", "calibrate", "collect_histograms",
           "compute_ranges", "ranges_by_calibrator", "search_weight_clipping"]

# Samples, not batches: what a range is estimated from does not depend on how the data is batched.
# About 500: what TensorRT's developer guide finds sufficient to calibrate ImageNet classifiers.
MIN_RECOMMENDED_SAMPLES = 500


def as_inputs(batch: Any) -> tuple[torch.Tensor, ...]:
    """A calibration batch as a tuple of input tensors (accepts a tensor, a tuple/list, or (inputs, labels))."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, tuple | list):
        if len(batch) == 2 and isinstance(batch[0], tuple | list):  # (inputs, labels) from a train loader
            return tuple(batch[0])
        return tuple(batch)
    if isinstance(batch, dict):
        return tuple(batch.values())
    raise CalibrationError(f"a calibration batch must be a tensor or a tuple of tensors, got {type(batch).__name__}")


def _batch_rows(inputs: tuple[Any, ...]) -> int:
    first = next((t for t in inputs if isinstance(t, torch.Tensor) and t.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


@torch.no_grad()
def collect_histograms(model: nn.Module, batches: Iterable[Any], max_batches: int,
                       progress: bool = True, forward: Callable[..., Any] | None = None) -> dict[str, Histogram]:
    """Run up to ``max_batches`` batches in FP32 (quantizers off) filling each activation's histogram."""
    quantizers = act_quantizers(model)
    previous = [q.mode for q in quantizers]
    wrappers = [m for m in model.modules() if isinstance(m, QUANT_WRAPPERS)]
    for q in quantizers:
        q.reset_histogram()
        q.mode = "observe"
    for m in wrappers:
        m.weight_quant.enabled = False
    was_training = model.training
    model.eval()
    device = model_device(model)
    seen = samples = 0
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_batches, desc="calibrate", unit="batch", disable=not progress, leave=False)
        for batch in batches:
            if seen >= max_batches:
                break
            inputs = to_device(as_inputs(batch), device)
            try:
                (forward or model)(*inputs)
            except CalibrationError:
                raise
            except (RuntimeError, TypeError, ValueError) as e:
                shapes = ", ".join(str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
                                   for t in inputs)
                raise CalibrationError(
                    f"the model failed on calibration batch {seen + 1} with inputs of shape {shapes}: {e}; "
                    "the data factory must yield batches shaped like the model's inputs"
                ) from e
            seen += 1
            samples += _batch_rows(inputs)
            bar.update(1)
        bar.close()
    finally:
        for q, mode in zip(quantizers, previous, strict=True):
            q.mode = mode
        for m in wrappers:
            m.weight_quant.enabled = True
        model.train(was_training)
    if seen == 0:
        raise CalibrationError("the calibration set is empty; pass at least one batch (128 recommended)")
    if samples < MIN_RECOMMENDED_SAMPLES:
        msg = (f"calibrated on only {samples} samples ({seen} batch(es)), fewer than the "
               f"{MIN_RECOMMENDED_SAMPLES} recommended: activation ranges may be unreliable (insufficient "
               "calibration); pass more data or raise calib_batches / calib_batch_size (--calib-batches, "
               "--calib-batch-size)")
        warnings.warn(msg, UserWarning, stacklevel=2)
    hists: dict[str, Histogram] = {}
    for q in quantizers:
        if q.histogram is None or q.histogram.batches == 0:
            continue  # never reached by the data (e.g. an unused branch): stays unquantized
        hists[q.qname] = q.histogram
    return hists


def compute_ranges(model: nn.Module, histograms: dict[str, Histogram], calibrator: Any) -> dict[str, tuple[float, float]]:
    """Ranges for each activation of ``model`` from ``histograms`` with one calibrator."""
    out: dict[str, tuple[float, float]] = {}
    for q in act_quantizers(model):
        h = histograms.get(q.qname)
        if h is None:
            continue
        if q.model_input:
            # Raw model inputs keep their full observed range whatever the calibrator: clipping data
            # destroys information that no later layer can recover (an entropy threshold on normalised
            # MNIST keeps the background and clips all the ink: 98.6% -> 54.8% on mnist-cnn).
            low, high = max_range(h, q.symmetric)
        else:
            low, high = calibrator.compute_range(h, q.bits, q.symmetric)
        low, high = float(low), float(high)
        if not (low == low and high == high) or high < low:
            raise CalibrationError(f"calibrator {calibrator.name!r} returned an invalid range ({low}, {high}) "
                                   f"for activation {q.qname!r}")
        out[q.qname] = (low, high)
    return out


def apply_ranges(model: nn.Module, ranges: dict[str, tuple[float, float]]) -> None:
    for q in act_quantizers(model):
        if q.qname in ranges:
            q.set_range(*ranges[q.qname])
        else:
            q.mode = "off"


def search_weight_clipping(model: nn.Module, bits: tuple[int, ...] = (4,)) -> int:
    """MSE search of per-channel/group clip ratios for weight quantizers of the given bit widths."""
    n = 0
    for m in model.modules():
        if isinstance(m, QUANT_WRAPPERS) and m.weight_quant.bits in bits:
            m.weight_quant.search_clip(m.weight)
            n += 1
    return n


def ranges_by_calibrator(model: nn.Module, histograms: dict[str, Histogram],
                         calibrators: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """All calibrators' ranges from the same histograms: ``{calibrator: {activation: (low, high)}}``."""
    return {name: compute_ranges(model, histograms, cal) for name, cal in calibrators.items()}


def calibrate(model: nn.Module, batches: Iterable[Any], calibrator: Any, max_batches: int,
              progress: bool = True) -> dict[str, Histogram]:
    """Collect histograms, compute ranges with ``calibrator`` and set them; returns the histograms."""
    hists = collect_histograms(model, batches, max_batches, progress)
    apply_ranges(model, compute_ranges(model, hists, calibrator))
    return hists
