"""``ptq`` (calibrate only) and ``qat`` (calibrate, then fine-tune with fake quantization)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from quantplug.errors import ConfigError
from quantplug.quant.context import QuantContext
from quantplug.registry import MethodCost

__all__ = ["PtqMethod", "QatMethod", "task_loss"]


@dataclass(frozen=True)
class PtqMethod:
    name: str = "ptq"
    description: str = "post-training quantization: calibrate activation ranges, no training"
    needs_training_data: bool = False
    needs_labels: bool = False
    needs_calibration: bool = True
    calibration_only: bool = True  # apply is context.calibrate: tune shares one histogram pass
    cost: MethodCost = MethodCost(1, "calibration only: about 128 batches of forward passes, seconds to minutes, "
                                     "no training", "a few hundred unlabeled representative inputs")

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        context.calibrate(model)
        return model


def task_loss(context: QuantContext) -> Any:
    """The task loss (see :meth:`QuantContext.task_loss`)."""
    return context.task_loss()


@dataclass(frozen=True)
class QatMethod:
    name: str = "qat"
    description: str = "quantization-aware training: calibrate, then fine-tune at lr_scale x the training LR"
    needs_training_data: bool = True
    needs_labels: bool = True
    needs_calibration: bool = True
    cost: MethodCost = MethodCost(3, "{epochs} epochs of fine-tuning with fake-quant at 1/10 of the training "
                                     "learning rate (about {epochs}x one training epoch)", "labelled training data")

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        context.calibrate(model)
        loss = task_loss(context)

        def loss_fn(out: Any, inputs: Any, labels: Any) -> torch.Tensor:
            if labels is None:
                raise ConfigError("qat needs labelled training data (inputs, labels); use qad for unlabelled data")
            return loss(out, labels)

        return context.finetune(model, loss_fn, "qat")
