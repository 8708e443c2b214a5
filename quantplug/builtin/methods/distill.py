"""``qad``: quantization-aware distillation from the FP32 model (the teacher).

Loss for classifiers: ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))`` plus
``(1 - alpha) * task loss`` when labels exist; works without labels. For embedding models (a workload whose
metric is ``cosine``, or ``recipe.extra["distill"] == "embedding"``) the loss is ``1 - cos + MSE`` between
student and teacher embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from quantplug.quant.context import QuantContext
from quantplug.quant.train import first_output
from quantplug.registry import MethodCost

__all__ = ["QadMethod", "distill_kind", "embedding_distill_loss", "logit_distill_loss"]


def logit_distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                    reduction="batchmean") * (t * t)


def embedding_distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s, t = student.flatten(1), teacher.flatten(1)
    return (1 - F.cosine_similarity(s, t, dim=1)).mean() + F.mse_loss(s, t)


def distill_kind(recipe: Any, context: QuantContext) -> str:
    explicit = recipe.extra.get("distill")
    if explicit in ("logits", "embedding"):
        return str(explicit)
    if context.workload is not None and getattr(context.workload, "metric", None) == "cosine":
        return "embedding"
    return "logits"


@dataclass(frozen=True)
class QadMethod:
    name: str = "qad"
    description: str = "quantization-aware distillation: fine-tune to match the FP32 teacher (labels optional)"
    needs_training_data: bool = True
    needs_labels: bool = False
    needs_calibration: bool = True
    cost: MethodCost = MethodCost(3, "{epochs} epochs of distillation from the FP32 teacher at 1/10 of the training "
                                     "learning rate (one extra teacher forward per step)",
                                  "unlabeled inputs only (the FP32 model provides the targets)")

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        context.calibrate(model)
        teacher = context.teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        kind = distill_kind(recipe, context)
        alpha, temp = recipe.distill_alpha, recipe.distill_temperature
        label_loss = context.task_loss()

        def loss_fn(out: Any, inputs: tuple[torch.Tensor, ...], labels: Any) -> torch.Tensor:
            student = first_output(out)
            with torch.no_grad():
                target = first_output(teacher(*inputs))
            if kind == "embedding":
                return embedding_distill_loss(student, target)
            loss = logit_distill_loss(student, target, temp)
            if labels is not None and alpha < 1:
                loss = alpha * loss + (1 - alpha) * label_loss(out, labels)
            return loss

        return context.finetune(model, loss_fn, "qad")
