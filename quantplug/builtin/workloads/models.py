"""The networks of the built-in workloads (plain ``torch.nn`` modules; import this module only when a
model is needed, it imports torch)."""

from __future__ import annotations

from torch import nn

from ._blocks import BasicBlock, Bottleneck, InvertedResidual, conv_bn

__all__ = ["DigitsMobileNet", "ImageNetResNet", "MnistCNN", "MnistResNet", "resnet18", "resnet50"]


class MnistCNN(nn.Module):
    """Two conv-BN-ReLU-maxpool stages (32, 64 channels) and a two-layer classifier (~0.44M parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(1, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            *conv_bn(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


class MnistResNet(nn.Module):
    """ResNet adapted to 28x28: a 3x3 stem (no max-pool), then BasicBlock stages of widths
    64-128-256 at 14x14, 7x7 and 4x4 (two blocks each, the first one downsampling by 2), global average
    pool, linear: 2.76M parameters, about 0.2 GFLOP per image."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256), blocks: tuple[int, ...] = (2, 2, 2),
                 stem: int = 32, num_classes: int = 10) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, stem, 3), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = stem
        for width, count in zip(widths, blocks, strict=True):
            for i in range(count):
                layers.append(BasicBlock(cin, width, stride=2 if i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


class DigitsMobileNet(nn.Module):
    """Stem 3x3 conv (16), six inverted residual blocks (expand 4; 24, 24, 32@4x4, 32, 64@2x2, 64),
    a 1x1 head conv (128), global average pool and a linear classifier."""

    # (out channels, stride, expansion)
    config: tuple[tuple[int, int, int], ...] = ((24, 1, 4), (24, 1, 4), (32, 2, 4), (32, 1, 4), (64, 2, 4), (64, 1, 4))

    def __init__(self, num_classes: int = 10, stem: int = 16, head: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(1, stem, 3), nn.ReLU6(inplace=True)]
        cin = stem
        for cout, stride, expand in self.config:
            layers.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        layers += [*conv_bn(cin, head, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(self.flatten(self.pool(self.features(x))))


class ImageNetResNet(nn.Module):
    """ResNet-18/34/50/... for 224x224 ImageNet-shaped inputs, laid out as in He et al. 2016 (v1.5 strides):
    7x7/2 stem, 3x3/2 max-pool, four stages (64, 128, 256, 512 base widths), global average pool, 1000-way fc."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        cin = 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(count):
                blocks.append(block(cin, width, stride=2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))


def resnet18(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes)
