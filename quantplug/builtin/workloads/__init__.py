"""Built-in workloads (a plugin registered through the same hooks as third-party packages).

``mnist-cnn``, ``mnist-resnet``, ``digits-mobilenet`` (trained from scratch on real data that ships
offline), ``resnet18``/``resnet50`` (224x224, synthetic data, for speed) and ``minilm`` (pretrained
all-MiniLM-L6-v2 on standard-library docstrings). Heavy work (data, torch models) happens only when
a workload's methods are called; registering is cheap.
"""

from __future__ import annotations

from typing import Any

from quantplug.hookspecs import hookimpl

__all__ = ["builtin_workloads", "register_workloads"]


def builtin_workloads() -> list[Any]:
    """Fresh instances of every built-in workload."""
    from .digits import DigitsMobileNetWorkload
    from .minilm import MiniLMWorkload
    from .mnist import MnistCNNWorkload, MnistResNetWorkload
    from .resnet import ResNet18Workload, ResNet50Workload

    return [
        MnistCNNWorkload(),
        MnistResNetWorkload(),
        DigitsMobileNetWorkload(),
        ResNet18Workload(),
        ResNet50Workload(),
        MiniLMWorkload(),
    ]


@hookimpl
def register_workloads(register):  # type: ignore[no-untyped-def]
    for workload in builtin_workloads():
        register(workload)
