"""Where a model lives, and moving its inputs there (so calibration and QAT run on a GPU model too)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["model_device", "to_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def to_device(inputs: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    """Move tensor inputs to ``device`` (a no-op when they are there already)."""
    return tuple(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in inputs)
