"""The torch quantization engine: fake quantizers, wrappers, BN folding, prepare, calibration, training."""

from __future__ import annotations

from .api import compare_calibrators, quantize
from .calibrate import collect_histograms, compute_ranges, ranges_by_calibrator
from .prepare import prepare

__all__ = ["collect_histograms", "compare_calibrators", "compute_ranges", "prepare", "quantize",
           "ranges_by_calibrator"]
