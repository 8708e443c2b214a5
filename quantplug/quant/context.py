"""QuantContext: what a method's ``apply`` gets besides the prepared model and the recipe.

This is the public method API (exported as ``quantplug.QuantContext``; docs/plugins.md): the data, the
FP32 teacher, and the services a method composes: find the inserted quantizers
(:meth:`~QuantContext.activation_quantizers`, :meth:`~QuantContext.weight_layers`), calibrate
(:meth:`~QuantContext.calibrate`), fine-tune (:meth:`~QuantContext.finetune` with
:meth:`~QuantContext.task_loss`), and record plain values in :attr:`~QuantContext.log`, which
``quantplug quantize --output`` writes into metrics.json under ``"method_log"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import CalibrationError, ConfigError
from ..recipe import QuantRecipe
from ..registry import Registry, Scheme
from .histogram import Histogram

__all__ = ["QuantContext"]


@dataclass
class QuantContext:
    """Data, teacher and services for a method.

    ``calib_data`` is an iterable of batches (a tensor, or a tuple of input tensors) or a zero-argument
    callable returning one; ``train_data`` is a callable ``epoch -> iterable of (inputs, labels)`` (labels
    may be None) or a re-iterable of such pairs. ``teacher`` is the FP32 model (eval mode).
    """

    recipe: QuantRecipe
    scheme: Scheme
    registry: Registry
    teacher: nn.Module
    calib_data: Any = None
    train_data: Any = None
    workload: Any = None
    progress: bool = True
    train_lr: float = 1e-3
    loss_fn: Callable[..., Any] | None = None
    histograms: dict[str, Histogram] | None = field(default=None, repr=False)
    log: dict[str, Any] = field(default_factory=dict)

    def calibrator(self, name: str | None = None) -> Any:
        """The recipe's calibrator (or ``name``), configured from the recipe by its ``with_recipe``."""
        cal = self.registry.calibrator(name or self.recipe.calibrator)
        return cal.with_recipe(self.recipe) if cal.with_recipe is not None else cal

    @staticmethod
    def activation_quantizers(model: nn.Module) -> list[Any]:
        """Every activation quantizer ``prepare`` inserted (``quantplug.quant.quantizer.ActQuantizer``:
        ``qname``, ``mode`` ``"observe"``/``"quant"``/``"dynamic"``, ``scale``, ``zero_point``,
        ``quant_min``/``quant_max`` buffers), each once, in model order."""
        from .prepare import act_quantizers

        return list(act_quantizers(model))

    @staticmethod
    def weight_layers(model: nn.Module) -> list[nn.Module]:
        """Every quantized layer (conv, linear, embedding wrapper): ``qname``, ``weight`` and its
        ``weight_quant`` (``bits``, ``per_channel``, ``group_size``, ``clip_ratio``, ``scale(w)``)."""
        from .prepare import weight_layers

        return list(weight_layers(model))

    def task_loss(self) -> Callable[[Any, Any], Any]:
        """The task loss ``loss(outputs, labels)``: the caller's ``loss_fn``, else the workload's
        ``loss``, else cross-entropy on the first output."""
        if self.loss_fn is not None:
            return self.loss_fn
        loss = getattr(self.workload, "loss", None) if self.workload is not None else None
        if loss is not None:
            return loss  # type: ignore[no-any-return]
        from .train import first_output

        def cross_entropy(out: Any, labels: Any) -> Any:
            import torch.nn.functional as F

            return F.cross_entropy(first_output(out), labels)

        return cross_entropy

    def finetune(self, model: nn.Module, loss_fn: Callable[[Any, Any, Any], Any], desc: str | None = None) -> nn.Module:
        """Fine-tune ``model`` (fake-quant) on the training data: ``recipe.qat_epochs`` epochs of Adam at
        ``recipe.lr_scale`` x the training LR with a cosine decay, dropout off, divergence detection
        (TrainingDivergedError). ``loss_fn(outputs, inputs, labels)``; labels may be None. The loss
        history goes to ``log["train_loss"][desc]``."""
        from .train import finetune

        return finetune(model, self, loss_fn, desc or self.recipe.method)

    def calibration_batches(self) -> Iterable[Any]:
        data = self.calib_data() if callable(self.calib_data) else self.calib_data
        if data is None:
            raise CalibrationError("no calibration data; pass calib_data (an iterable of input batches) or a workload")
        return data

    def train_batches(self, epoch: int) -> Iterable[Any]:
        if self.train_data is None:
            raise ConfigError(f"method {self.recipe.method!r} trains, but no training data was given; pass "
                              "train_data (batches of (inputs, labels)) or use a workload")
        return self.train_data(epoch) if callable(self.train_data) else self.train_data

    def calibrate(self, model: nn.Module, calibrator: str | None = None) -> dict[str, Histogram]:
        """Calibrate ``model``'s activation quantizers with the recipe's calibrator (or ``calibrator``):
        one pass over ``recipe.calib_batches`` calibration batches collects a histogram per quantizer
        (cached on the context, so a second calibrator costs no data pass), the calibrator's range is
        set on each, and INT4 weight clipping is searched. Afterwards the quantizers quantize."""
        from .calibrate import apply_ranges, collect_histograms, compute_ranges, search_weight_clipping

        if self.histograms is None:
            self.histograms = collect_histograms(model, self.calibration_batches(), self.recipe.calib_batches,
                                                 self.progress)
        apply_ranges(model, compute_ranges(model, self.histograms, self.calibrator(calibrator)))
        self.log["int4_clip_searched_layers"] = search_weight_clipping(model, bits=(4,))
        return self.histograms


def peek(data: Iterable[Any]) -> tuple[Any, Iterable[Any]]:
    """The first item of ``data`` and an iterable that still yields every item."""
    it: Iterator[Any] = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise CalibrationError("the calibration set is empty; pass at least one batch (128 recommended)") from None
    if isinstance(data, list | tuple):
        return first, data
    return first, itertools.chain([first], it)
