"""``ptq`` (calibrate only) and ``qat`` (calibrate, then fine-tune with fake quantization)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from quantplug.errors import ConfigError
from quantplug.quant.context import QuantContext
from quantplug.quant.train import finetune, first_output

__all__ = ["PtqMethod", "QatMethod", "task_loss"]


@dataclass(frozen=True)
class PtqMethod:
    name: str = "ptq"
    description: str = "post-training quantization: calibrate activation ranges, no training"
    needs_training_data: bool = False
    needs_labels: bool = False
    needs_calibration: bool = True

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        context.calibrate(model)
        return model


def task_loss(context: QuantContext) -> Any:
    if context.loss_fn is not None:
        return context.loss_fn
    if context.workload is not None and hasattr(context.workload, "loss"):
        return context.workload.loss
    return lambda out, labels: torch.nn.functional.cross_entropy(first_output(out), labels)


@dataclass(frozen=True)
class QatMethod:
    name: str = "qat"
    description: str = "quantization-aware training: calibrate, then fine-tune at lr_scale x the training LR"
    needs_training_data: bool = True
    needs_labels: bool = True
    needs_calibration: bool = True

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        context.calibrate(model)
        loss = task_loss(context)

        def loss_fn(out: Any, inputs: Any, labels: Any) -> torch.Tensor:
            if labels is None:
                raise ConfigError("qat needs labelled training data (inputs, labels); use qad for unlabelled data")
            return loss(out, labels)

        return finetune(model, context, loss_fn, "qat")
