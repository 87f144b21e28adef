"""Module classes registered under ``bulkinfer.torch_modules`` for the ``torch_module`` predictor.

This module imports torch at the top: it is loaded only when a ``torch_module`` stage builds its
model (entry points are listed from package metadata, without importing). Register your own
classes the same way in your package's pyproject.toml::

    [project.entry-points."bulkinfer.torch_modules"]
    my_net = "my_package.nets:MyNet"
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """A multilayer perceptron: ``in_features -> hidden... -> out_features``, ReLU in between."""

    def __init__(self, in_features: int, out_features: int, hidden: list[int] | None = None):
        super().__init__()
        sizes = [in_features, *(hidden or []), out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[rows, in_features]`` -> ``[rows, out_features]``."""
        return self.layers(x)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (ResNet-18/34's residual block)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A ResNet with basic blocks; the defaults are ResNet-18 (He et al., 2015).

    Parameter names and shapes are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
    ``fc``), so the state dict of a torchvision ``resnet18``/``resnet34`` (``layers=[3, 4, 6,
    3]``) fine-tuned elsewhere loads into it, and a model saved from it is what torchvision's
    would compute. ``[rows, in_channels, height, width]`` float images (normalised as the
    weights expect) -> ``[rows, num_classes]`` logits.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        layers: list[int] | None = None,
        width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers = layers or [2, 2, 2, 2]
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        for stage, blocks in enumerate(layers):
            out = width * 2**stage
            stride = 1 if stage == 0 else 2
            stack = [_BasicBlock(channels, out, stride)]
            stack += [_BasicBlock(out, out) for _ in range(1, blocks)]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*stack))
            channels = out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        self._stages = len(layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[rows, in_channels, h, w]`` -> ``[rows, num_classes]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(self._stages):
            x = getattr(self, f"layer{stage + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
