"""Quantization-friendly building blocks.

Use these modules for the operations *between* layers (a residual add, a concatenation) instead of
writing ``a + b`` or ``torch.cat`` inline in ``forward``. Being modules, they are visible to
quantplug's engine, which can then place Q/DQ on their inputs and outputs the way the runtime fuses
them (TensorRT: Q/DQ on the identity branch of a residual add; equal scales into a concat). In floating
point they behave exactly like the inline operation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Add", "Concat"]


class Add(nn.Module):
    """``Add()(a, b) == a + b``: an element-wise (residual) add the quantizer can see."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Concat(nn.Module):
    """``Concat(dim)(a, b, ...) == torch.cat([a, b, ...], dim)``: a concat the quantizer can see."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat(tensors, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
