"""A plugin whose hook name is misspelled (``register_calibrator``): quantplug must name it, never ignore it."""

from __future__ import annotations

import quantplug


class QuarterMaxCalibrator:
    name = "fixture-quartermax"
    description = "test fixture: a quarter of the observed absolute maximum"

    def compute_range(self, histogram, bits, symmetric):  # type: ignore[no-untyped-def]
        bound = max(abs(float(histogram.min)), abs(float(histogram.max))) / 4
        return -bound, bound


@quantplug.hookimpl
def register_calibrator(register):  # type: ignore[no-untyped-def]  # misspelled on purpose
    register(QuarterMaxCalibrator())
