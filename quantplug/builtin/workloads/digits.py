"""``digits-mobilenet``: a small MobileNetV2-style network on sklearn's 8x8 digits.

Depthwise convolutions have few weights per output channel and very different ranges per channel,
which is why per-tensor or INT4 weight PTQ hurts this model (and QAT/QAD recover it).

Data: sklearn's 1,797 digits, split once into 1,200 training and 597 held-out test images (stratified,
see :func:`._data.stratified_split`). Inputs ``(N, 1, 8, 8)`` float32: pixels / 16, then
``(x - 0.3053) / 0.3760``. Network: :class:`.models.DigitsMobileNet`.
"""

from __future__ import annotations

from typing import Any

from ._base import ClassificationWorkload
from ._data import Split, load_digits_split

__all__ = ["DigitsMobileNetWorkload"]


class DigitsMobileNetWorkload(ClassificationWorkload):
    name = "digits-mobilenet"
    description = (
        "MobileNetV2-style net (inverted residuals, depthwise convs, BatchNorm, ReLU6) on sklearn digits "
        "(1,200 train / 597 held-out test); inputs (N,1,8,8) float32 = (pixels/16 - 0.3053)/0.3760; "
        "metric: top-1 accuracy %; per-tensor/INT4 weight PTQ hurts here"
    )
    train_lr = 3e-3
    epochs = 20
    train_batch_size = 32
    version = "mbv2-1"

    def _load_split(self) -> Split:
        return load_digits_split()

    def _make_model(self) -> Any:
        from .models import DigitsMobileNet

        return DigitsMobileNet()
