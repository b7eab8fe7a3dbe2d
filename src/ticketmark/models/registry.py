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
    """A built-in architecture, or the user's own: ``package.module:factory`` (optionally
    followed by JSON keyword arguments), called with whichever of ``in_channels``,
    ``num_classes`` and ``image_size`` it accepts (``ticketmark.usercode``: imported only
    when the user named it)."""
    from ticketmark import usercode

    if usercode.is_spec(name):
        factory, kwargs = usercode.load(name, "model")
        model = usercode.call_with(factory, kwargs, in_channels=in_channels,
                                   num_classes=num_classes, image_size=image_size)
        if not isinstance(model, nn.Module):
            raise TicketmarkError(f"{name} returned {type(model).__name__}, not an nn.Module")
        return model
    if name not in MODELS:
        raise TicketmarkError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, "
                              "or your own as 'package.module:factory'")
    return MODELS[name](in_channels, num_classes, image_size)
