"""Name -> constructor taking the dataset's input channels, classes and image size."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.models.conv import conv2, conv4, conv6, lenet300, vgg16
from ticketmark.models.resnet import resnet18, resnet20s

Builder = Callable[[int, int, int], nn.Module]
MODELS: dict[str, Builder] = {
    "lenet300": lenet300,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "resnet20s": resnet20s,
    "resnet18": resnet18,
    "vgg16": vgg16,
}

# Learning rates that train each family stably with SGD+momentum 0.9 (plain ReLU stacks
# without BatchNorm diverge at the ResNet rate).
DEFAULT_LR = {"lenet300": 0.05, "conv2": 0.01, "conv4": 0.01, "conv6": 0.01,
              "resnet20s": 0.1, "resnet18": 0.05, "vgg16": 0.05}


def default_lr(name: str) -> float:
    return DEFAULT_LR.get(name, 0.05)


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if name not in MODELS:
        raise TicketmarkError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](in_channels, num_classes, image_size)
