"""The LSQ arithmetic: two straight-through tricks and the fake quantizer built from them.

LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020) quantizes ``x`` with a step size ``s``:

    x_hat = round(clamp(x / s, Qn, Qp)) * s

and learns ``s`` by backpropagation. ``round`` has zero gradient almost everywhere, so it is replaced by
the identity in the backward pass (the straight-through estimator). The gradient that reaches ``s`` is
then exactly the paper's equation 3::

    d x_hat / d s = round(x/s) - x/s   inside the range,   Qn or Qp   outside it

and it is multiplied by ``g = 1 / sqrt(N * Qp)`` (N: the number of values sharing the step) so that
step sizes and weights learn at comparable relative rates (the paper's section 2.2).
"""

from __future__ import annotations

import math

import torch

__all__ = ["grad_scale", "gradient_scale", "lsq_fake_quant", "round_ste"]


# Both tricks add ``t - t.detach()``, which is exactly 0.0 forward and carries t's gradient backward, to an
# exact forward value. (The common ``(f(x) - x).detach() + x`` is off by float rounding, e.g. 2.0000002
# instead of 2, which is enough to flip later roundings against the exported model.)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` (half to even, like ``torch.fake_quantize_*``) forward, identity backward (STE)."""
    return x.detach().round() + (x - x.detach())


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` forward; its gradient multiplied by ``scale`` backward."""
    y = x * scale
    return x.detach() + (y - y.detach())


def gradient_scale(n: int, qp: int) -> float:
    """The paper's step-size gradient scale ``1 / sqrt(N * Qp)`` (N values share one step)."""
    return 1.0 / math.sqrt(max(n, 1) * max(qp, 1))


def lsq_fake_quant(x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int, g: float,
                   zero_point: int = 0) -> torch.Tensor:
    """``(round(clamp(x / s + z, qmin, qmax)) - z) * s`` with STE rounding and the step's gradient scaled by ``g``.

    ``step`` broadcasts against ``x`` (a scalar for per-tensor, ``[rows, 1]`` for per-row steps). The zero
    point ``z`` is a fixed integer: the paper's ``Qn, Qp`` are ``qmin - z, qmax - z``, and shifting by
    ``z`` leaves every gradient unchanged. The arithmetic is ordered like ``torch.fake_quantize_*``
    (``x * (1 / s) + z``, then round), so the written-back model rounds every value the same way.
    """
    s = grad_scale(step, g)
    q = round_ste(torch.clamp(x * s.reciprocal() + zero_point, qmin, qmax))
    return (q - zero_point) * s
