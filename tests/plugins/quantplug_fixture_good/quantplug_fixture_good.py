"""A third-party plugin as a package author writes it: it imports only quantplug."""

from __future__ import annotations

import quantplug


class HalfMaxCalibrator:
    name = "fixture-halfmax"
    description = "test fixture: half of the observed absolute maximum"

    def compute_range(self, histogram, bits, symmetric):  # type: ignore[no-untyped-def]
        low, high = float(histogram.min), float(histogram.max)
        bound = max(abs(low), abs(high)) / 2
        return (-bound, bound) if symmetric or low < 0 else (0.0, bound)


@quantplug.hookimpl
def register_calibrators(register):  # type: ignore[no-untyped-def]
    register(HalfMaxCalibrator())
