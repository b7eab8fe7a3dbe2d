"""CIFAR ResNets: ResNet-20s (widths 16/32/64, the paper's main model) and ResNet-18.

Shortcuts that change shape are 1x1 conv + BN (option B), so every channel of a residual
stream is an explicit tensor index: attacks and the lock can permute or follow it exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], widths: list[int], in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        planes = widths[0]
        stages = []
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            layer = []
            for j in range(n):
                layer.append(BasicBlock(planes, w, 2 if (i > 0 and j == 0) else 1))
                planes = w
            stages.append(nn.Sequential(*layer))
        self.layers = len(stages)
        for i, stage in enumerate(stages, start=1):
            setattr(self, f"layer{i}", stage)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.layers + 1):
            out = getattr(self, f"layer{i}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet20s(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return ResNet([3, 3, 3], [16, 32, 64], in_channels, num_classes)


def resnet18(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], in_channels, num_classes)
