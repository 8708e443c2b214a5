"""Built-in calibrators: ``max``, ``percentile``, ``entropy`` (KL, TensorRT-style) and ``mse``.

A calibrator turns one activation histogram into a range. All of them read the same histograms, so
comparing calibrators costs one pass over the calibration data
(:func:`quantplug.quant.api.compare_calibrators`). A calibrator that needs settings from the recipe may
define ``with_recipe(recipe) -> calibrator``; the engine calls it before computing ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from quantplug.hookspecs import hookimpl

from .algorithms import entropy_range, max_range, mse_range, percentile_range

__all__ = ["EntropyCalibrator", "MaxCalibrator", "MseCalibrator", "PercentileCalibrator"]


@dataclass(frozen=True)
class MaxCalibrator:
    name: str = "max"
    description: str = "the observed minimum and maximum (no clipping)"

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]:
        return max_range(histogram, symmetric)


@dataclass(frozen=True)
class PercentileCalibrator:
    name: str = "percentile"
    description: str = "clip at a percentile of the values (recipe.percentile, default 99.99)"
    percentile: float = 99.99

    def with_recipe(self, recipe: Any) -> PercentileCalibrator:
        return replace(self, percentile=float(recipe.percentile))

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]:
        return percentile_range(histogram, symmetric, self.percentile)


@dataclass(frozen=True)
class EntropyCalibrator:
    name: str = "entropy"
    description: str = "the threshold minimising KL divergence to the FP32 distribution (TensorRT-style)"

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]:
        return entropy_range(histogram, symmetric, bits)


@dataclass(frozen=True)
class MseCalibrator:
    name: str = "mse"
    description: str = "the range minimising the expected squared quantization error"

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]:
        return mse_range(histogram, symmetric, bits)


@hookimpl
def register_calibrators(register):  # type: ignore[no-untyped-def]
    for cal in (MaxCalibrator(), PercentileCalibrator(), EntropyCalibrator(), MseCalibrator()):
        register(cal)
