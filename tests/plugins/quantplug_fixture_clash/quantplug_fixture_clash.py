"""A plugin that registers a calibrator under a built-in's name (``max``): a clash naming both plugins."""

from __future__ import annotations

import quantplug


class OtherMaxCalibrator:
    name = "max"
    description = "test fixture: clashes with the built-in max calibrator"

    def compute_range(self, histogram, bits, symmetric):  # type: ignore[no-untyped-def]
        return float(histogram.min), float(histogram.max)


@quantplug.hookimpl
def register_calibrators(register):  # type: ignore[no-untyped-def]
    register(OtherMaxCalibrator())
