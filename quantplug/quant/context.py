"""QuantContext: what a method's ``apply`` gets besides the prepared model and the recipe."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import CalibrationError, ConfigError
from ..recipe import QuantRecipe
from ..registry import Registry, Scheme
from .histogram import Histogram

__all__ = ["QuantContext"]


@dataclass
class QuantContext:
    """Data, teacher and services for a method.

    ``calib_data`` is an iterable of batches (a tensor, or a tuple of input tensors) or a zero-argument
    callable returning one; ``train_data`` is a callable ``epoch -> iterable of (inputs, labels)`` (labels
    may be None) or a re-iterable of such pairs. ``teacher`` is the FP32 model (eval mode).
    """

    recipe: QuantRecipe
    scheme: Scheme
    registry: Registry
    teacher: nn.Module
    calib_data: Any = None
    train_data: Any = None
    workload: Any = None
    progress: bool = True
    train_lr: float = 1e-3
    loss_fn: Callable[..., Any] | None = None
    histograms: dict[str, Histogram] | None = field(default=None, repr=False)
    log: dict[str, Any] = field(default_factory=dict)

    def calibrator(self, name: str | None = None) -> Any:
        cal = self.registry.calibrator(name or self.recipe.calibrator)
        with_recipe = getattr(cal, "with_recipe", None)
        return with_recipe(self.recipe) if callable(with_recipe) else cal

    def calibration_batches(self) -> Iterable[Any]:
        data = self.calib_data() if callable(self.calib_data) else self.calib_data
        if data is None:
            raise CalibrationError("no calibration data; pass calib_data (an iterable of input batches) or a workload")
        return data

    def train_batches(self, epoch: int) -> Iterable[Any]:
        if self.train_data is None:
            raise ConfigError(f"method {self.recipe.method!r} trains, but no training data was given; pass "
                              "train_data (batches of (inputs, labels)) or use a workload")
        return self.train_data(epoch) if callable(self.train_data) else self.train_data

    def calibrate(self, model: nn.Module, calibrator: str | None = None) -> dict[str, Histogram]:
        """Calibrate ``model``'s activations (one data pass, cached) with a calibrator."""
        from .calibrate import apply_ranges, collect_histograms, compute_ranges, search_weight_clipping

        if self.histograms is None:
            self.histograms = collect_histograms(model, self.calibration_batches(), self.recipe.calib_batches,
                                                 self.progress)
        apply_ranges(model, compute_ranges(model, self.histograms, self.calibrator(calibrator)))
        self.log["int4_clip_searched_layers"] = search_weight_clipping(model, bits=(4,))
        return self.histograms


def peek(data: Iterable[Any]) -> tuple[Any, Iterable[Any]]:
    """The first item of ``data`` and an iterable that still yields every item."""
    it: Iterator[Any] = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise CalibrationError("the calibration set is empty; pass at least one batch (128 recommended)") from None
    if isinstance(data, list | tuple):
        return first, data
    return first, itertools.chain([first], it)
