"""Pixel space: the [0, 1] image range the threat model is stated in.

Every dataset is stored normalised per channel, ``x = (pixel - mean) / std``. An attack
budget ``eps`` is stated in raw [0, 1] pixel units (the convention of the robustness
literature: eps 0.3 on MNIST), so in normalised units it is ``eps / std`` per channel, and
the valid image range is ``[(0 - mean) / std, (1 - mean) / std]``. ``PixelSpace`` holds
those conversions so no caller repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError


@dataclass(frozen=True)
class PixelSpace:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, data: DataSplits) -> PixelSpace:
        if data.pixel_mean is None or data.pixel_std is None:
            raise TicketmarkError(f"dataset {data.name!r} carries no pixel statistics; "
                                  "load it with ticketmark.data.load_dataset")
        return cls(tuple(data.pixel_mean), tuple(data.pixel_std))

    def _view(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        if like.dim() != 4 or like.shape[1] != len(values):
            raise TicketmarkError(f"expected images (N, {len(values)}, H, W), "
                                  f"got {tuple(like.shape)}")
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.std, x) + self._view(self.mean, x)

    def from_pixels(self, p: torch.Tensor) -> torch.Tensor:
        return (p - self._view(self.mean, p)) / self._view(self.std, p)

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images of pixel values 0 and 1, broadcastable to ``like``."""
        zeros = torch.zeros(1, len(self.mean), 1, 1, dtype=like.dtype, device=like.device)
        return self.from_pixels(zeros), self.from_pixels(zeros + 1)

    def scale(self, amount: float, like: torch.Tensor) -> torch.Tensor:
        """``amount`` pixel units in normalised units, per channel."""
        return amount / self._view(self.std, like)
