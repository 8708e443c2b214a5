"""Built-in methods: ``ptq``, ``qat``, ``qad`` and ``dynamic``.

A method is a small config object with ``apply(model, recipe, context)`` (torchao's contract): it gets
the prepared model (BatchNorm folded, fake quantizers inserted in the target's scheme) and returns the
quantized module. ``needs_training_data`` / ``needs_labels`` say what data it needs; a method may also
define ``prepare(model, recipe, scheme, example_inputs)`` to place its own quantizers and
``needs_calibration = False`` when it computes ranges at run time.
"""

from __future__ import annotations

from quantplug.hookspecs import hookimpl

from .distill import QadMethod
from .dynamic import DynamicMethod
from .static import PtqMethod, QatMethod

__all__ = ["DynamicMethod", "PtqMethod", "QadMethod", "QatMethod"]


@hookimpl
def register_methods(register):  # type: ignore[no-untyped-def]
    for method in (PtqMethod(), QatMethod(), QadMethod(), DynamicMethod()):
        register(method)
