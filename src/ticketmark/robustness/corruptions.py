"""Common corruptions computed on the fly, CIFAR-10-C style (Hendrycks & Dietterich 2019).

Four corruptions at five severities each, applied in [0, 1] pixel space and clipped to it.
The severity parameters are CIFAR-10-C's: Gaussian noise sigma, Gaussian blur sigma,
contrast factor (pixels pulled towards each image's mean), brightness shift (CIFAR-10-C
adds it to the HSV value channel; here it is added to every channel, which is the same for
greyscale). Noise is drawn from a generator seeded by (seed, corruption, severity), so a
report is reproducible and two models are compared on exactly the same images.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ticketmark.errors import TicketmarkError
from ticketmark.robustness.pixels import PixelSpace

SEVERITIES = (1, 2, 3, 4, 5)
PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
}
CORRUPTIONS = tuple(PARAMS)


def _noise(p: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    return p + sigma * torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _blur(p: torch.Tensor, sigma: float, _: torch.Generator) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, p.shape[-1] - 1, p.shape[-2] - 1)  # reflect padding needs < size
    t = torch.arange(-radius, radius + 1, dtype=p.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = p.shape[1]
    padded = F.pad(p, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(rows, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _contrast(p: torch.Tensor, factor: float, _: torch.Generator) -> torch.Tensor:
    mean = p.mean(dim=(1, 2, 3), keepdim=True)
    return (p - mean) * factor + mean


def _brightness(p: torch.Tensor, shift: float, _: torch.Generator) -> torch.Tensor:
    return p + shift


_FUNCS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _noise, "gaussian_blur": _blur, "contrast": _contrast,
    "brightness": _brightness,
}


def corrupt(x: torch.Tensor, space: PixelSpace, kind: str, severity: int,
            seed: int = 0) -> torch.Tensor:
    """The normalised images ``x`` under ``kind`` at ``severity`` (1..5), still normalised."""
    if kind not in _FUNCS:
        raise TicketmarkError(f"unknown corruption {kind!r}; choose one of: "
                              f"{', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise TicketmarkError(f"corruption severity must be 1..5, got {severity}")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(kind.encode()) + severity)
    pixels = space.to_pixels(x.detach().cpu().float())
    out = _FUNCS[kind](pixels, PARAMS[kind][severity - 1], gen).clamp(0.0, 1.0)
    return space.from_pixels(out).to(x.dtype)
