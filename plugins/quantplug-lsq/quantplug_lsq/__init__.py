"""quantplug-lsq: LSQ, learned step size quantization (Esser et al. 2020), as a quantplug method.

Installing this distribution registers the method ``lsq`` through the ``quantplug`` entry point:
``quantplug quantize --workload mnist-cnn --method lsq --output out/``. It is QAT whose quantizer step
sizes (activations per tensor, weights per channel or group) are learned with the weights, then
written back into quantplug's quantizers so that the normal QDQ export carries them.

The package is written only against quantplug's public plugin API: ``quantplug.hookimpl``, the
``register_methods`` hook, the method contract of ``docs/plugins.md`` and public ``quantplug.quant``
modules. See README.md for how it was built.
"""

from __future__ import annotations

from typing import Any

import quantplug

from .method import LsqMethod, lsq_settings
from .ste import grad_scale, gradient_scale, lsq_fake_quant, round_ste
from .steps import ActivationStep, LearnedSteps, WeightStep, learned_steps

__all__ = ["ActivationStep", "LearnedSteps", "LsqMethod", "WeightStep", "grad_scale", "gradient_scale",
           "learned_steps", "lsq_fake_quant", "lsq_settings", "register_methods", "round_ste"]


@quantplug.hookimpl
def register_methods(register: Any) -> None:
    register(LsqMethod())
