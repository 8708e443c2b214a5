"""The ``lsq`` method: calibrate, then fine-tune weights *and* step sizes, then write the steps back.

It follows quantplug's method contract (``docs/plugins.md``): a frozen dataclass with ``name``,
``description``, the data it needs, and ``apply(model, recipe, context)``, which receives the model the
engine prepared for the target's scheme (BatchNorm folded, fake quantizers placed) and returns it
quantized. Training reuses the engine's ``finetune`` (Adam at ``recipe.lr_scale`` x the workload's
training LR for ``recipe.qat_epochs`` epochs, divergence detection), exactly like the built-in ``qat``;
the only difference is that the step sizes are parameters too.

Settings beyond the recipe's standard fields live in ``recipe.extra`` (JSON round-trippable):

- ``lsq_init``: ``"calibrated"`` (default: start from the calibrator's ranges, which already fit a
  trained network) or ``"paper"`` (the paper's ``2 * mean|x| / sqrt(Qp)``).
- ``lsq_step_rate`` (default 10): steps are stored as ``log(step) / rate``; the engine's Adam changes each
  stored value by about ``lr`` per iteration, so a step changes by about ``rate x lr`` *relative* per
  iteration (see ``steps.py``, "Why logarithms").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from quantplug import ConfigError, QuantContext

from .steps import DEFAULT_RATE, INITS, learned_steps

__all__ = ["LsqMethod", "lsq_settings"]


def lsq_settings(recipe: Any) -> tuple[Any, float]:
    """``(init, rate)`` from ``recipe.extra`` (``lsq_init``, ``lsq_step_rate``), validated."""
    extra = getattr(recipe, "extra", None) or {}
    init = extra.get("lsq_init", "calibrated")
    if init not in INITS:
        raise ConfigError(f"recipe extra lsq_init={init!r} is not valid; use one of {', '.join(INITS)} "
                          '(e.g. "extra": {"lsq_init": "calibrated"} in recipe.json)')
    rate = extra.get("lsq_step_rate", DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1000:
        raise ConfigError(f"recipe extra lsq_step_rate={rate!r} is not valid; use a number in (0, 1000] "
                          f"(default {DEFAULT_RATE:g})")
    return init, float(rate)


@dataclass(frozen=True)
class LsqMethod:
    """Learned step size quantization (Esser et al. 2020) as a QAT variant."""

    name: str = "lsq"
    description: str = ("learned step size QAT (Esser et al. 2020): fine-tune weights and every quantizer's "
                        "step size; the learned steps are exported")
    needs_training_data: bool = True
    needs_labels: bool = True
    needs_calibration: bool = True

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        init, rate = lsq_settings(recipe)  # fail on a bad setting before any work
        context.calibrate(model)  # activation ranges, and the starting point of the steps
        loss = context.task_loss()  # the caller's, else the workload's, else cross-entropy

        def loss_fn(out: Any, inputs: Any, labels: Any) -> torch.Tensor:
            if labels is None:
                raise ConfigError("lsq needs labelled training data (inputs, labels); use qad for unlabelled data")
            return loss(out, labels)

        with learned_steps(model, init, rate) as steps:
            context.finetune(model, loss_fn, self.name)
        context.log["lsq"] = {"init": init, "step_rate": rate, **steps.summary()}
        return model
