"""A user's own model and data, written the way a user would, not the way ticketmark's are.

``mobilenet``: a MobileNetV2-style network (inverted residual blocks: 1x1 expansion,
depthwise 3x3, 1x1 projection, residual add when shapes match) for 3-channel images.
``rgb32``: 3-channel 32x32 images of ten synthetic classes (oriented colour gratings plus
noise), as a ``(train, test)`` pair of ``TensorDataset``s: nothing is downloaded.
``marker``: a factory that writes a file when imported code runs (the security test).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_res else out


class MobileNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(width, width, 2, 2),
                                    InvertedResidual(width, 24, 2, 2),
                                    InvertedResidual(24, 24, 2, 1))
        self.head = nn.Sequential(nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))


def mobilenet(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> nn.Module:
    return MobileNet(in_channels, num_classes, width)


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    angle = (y % 5).float() * math.pi / 5  # five orientations x two colour schemes
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    phase = (torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy)
    grating = torch.sin(phase * 0.8)
    warm = (y >= 5).float()
    colour = torch.stack([0.2 + 0.6 * warm, 0.5 + 0 * warm, 0.8 - 0.6 * warm], 1)
    x = 0.5 + 0.45 * grating[:, None] * colour[:, :, None, None]
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1), y


def rgb32(train: int = 500, test: int = 200) -> tuple[TensorDataset, TensorDataset]:
    return TensorDataset(*_images(train, 0)), TensorDataset(*_images(test, 1))


def marker(**_: object) -> nn.Module:
    """Proof that imported code ran: writes the file named by $TICKETMARK_TEST_MARKER."""
    Path(os.environ.get("TICKETMARK_TEST_MARKER", "marker-ran")).write_text("imported")
    return MobileNet()
