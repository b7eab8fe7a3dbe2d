"""LeNet-300-100 and Conv-2/4/6 from the LTH paper; VGG-16 (BN) for CIFAR-sized input."""

from __future__ import annotations

from torch import nn


def _he_init(model: nn.Module) -> nn.Module:
    """He-normal weights, zero biases: plain ReLU stacks without BN train from step one."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def lenet300(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _he_init(nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    ))


def _conv_net(widths: list[int], in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Pairs of 3x3 convs, each pair followed by 2x2 max-pool, then FC 256-256-classes."""
    layers: list[nn.Module] = []
    size, c = image_size, in_channels
    for i in range(0, len(widths), 2):
        for w in widths[i : i + 2]:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
            c = w
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [
        nn.Flatten(),
        nn.Linear(c * size * size, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    ]
    return _he_init(nn.Sequential(*layers))


def conv2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _conv_net([64, 64], in_channels, num_classes, image_size)


def conv4(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _conv_net([64, 64, 128, 128], in_channels, num_classes, image_size)


def conv6(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _conv_net([64, 64, 128, 128, 256, 256], in_channels, num_classes, image_size)


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """VGG-16 with BatchNorm; pools are skipped once the map is 1x1 so small inputs work."""
    layers: list[nn.Module] = []
    c, size = in_channels, image_size
    for v in _VGG16:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                   nn.ReLU(inplace=True)]
        c = int(v)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)
