"""Tiny models and data for the quantization tests (also a user model/data factory for the CLI tests)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from quantplug.nn import Add


class Block(nn.Module):
    def __init__(self, c: int, inline_add: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(c)
        self.add = Add()
        self.r2 = nn.ReLU()
        self.inline_add = inline_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(self.r1(self.b1(self.c1(x)))))
        return self.r2(y + x if self.inline_add else self.add(y, x))


class TinyResNet(nn.Module):
    """Conv-BN-ReLU stem, max-pool, one residual block, global pool, linear head (1x16x16 inputs)."""

    def __init__(self, inline_add: bool = False, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.block = Block(8, inline_add)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class Untraceable(TinyResNet):
    """Same network, with data-dependent control flow torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 1e30:  # never true; defeats symbolic tracing
            x = x * 0
        return super().forward(x)


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.f1 = nn.Linear(d_in, hidden)
        self.act = nn.ReLU()
        self.f2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f2(self.act(self.f1(x.flatten(1))))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def tiny_resnet(seed: int = 0, inline_add: bool = False) -> TinyResNet:
    torch.manual_seed(seed)
    return randomize_bn(TinyResNet(inline_add))  # type: ignore[return-value]


def batches(n: int, batch: int = 4, shape: tuple[int, ...] = (1, 16, 16), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=g) for _ in range(n)]


def labelled(n: int, seed: int = 0, d_in: int = 64) -> list[tuple[tuple[torch.Tensor], torch.Tensor]]:
    """A learnable toy task: the label is the argmax of the first 10 features."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(16, d_in, generator=g)
        out.append(((x,), x[:, :10].argmax(1)))
    return out


# --- a user model and data factory for `quantplug quantize --model ... --data ...` ----------------------

def build() -> nn.Module:
    return tiny_resnet(0)


class _Data:
    input_names = ("input",)
    output_names = ("logits",)

    def __init__(self, n_calib: int = 6, shape: tuple[int, ...] = (1, 16, 16)) -> None:
        self.n_calib, self.shape = n_calib, shape

    def calibration_batches(self, batch_size: int, seed: int = 0):  # type: ignore[no-untyped-def]
        return [(b,) for b in batches(self.n_calib, 4, self.shape, seed)]

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = batches(1, 32, self.shape, seed=99)[0]
        with torch.no_grad():
            y = build()(x).argmax(1) if self.shape == (1, 16, 16) else torch.zeros(32, dtype=torch.long)
        return {"input": x.numpy()}, y.numpy()


def make_data() -> _Data:
    return _Data()


def make_empty_data() -> _Data:
    return _Data(n_calib=0)


def make_wrong_shape_data() -> _Data:
    return _Data(shape=(3, 16, 16))
