"""Sibling risk: do adversarial examples crafted on a released ticket fool the private model?

An owner who publishes a sparse sibling of a private model hands an attacker a white-box
surrogate: PGD on the released ticket, then the same images sent to the private model. We
count, on test images both models classify correctly, how many of the released ticket's
successful adversarial examples also fool the private model (the transfer rate), and, as a
control, how many images the private model gets wrong under random sign noise of the same
eps (a transfer rate near that control means the released ticket tells the attacker
nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.robustness.pgd import check_budget, pgd_worst
from ticketmark.robustness.pixels import PixelSpace
from ticketmark.training import predict


@dataclass
class TransferOptions:
    eps: float = 0.1
    steps: int = 20
    restarts: int = 1
    limit: int | None = 1000
    seed: int = 0

    def validate(self) -> TransferOptions:
        check_budget(self.eps, self.steps)
        if self.eps == 0.0 or self.steps == 0:
            raise TicketmarkError("transfer needs an attack: eps > 0 and steps >= 1")
        if self.limit is not None and self.limit < 1:
            raise TicketmarkError(f"limit must be >= 1 image, got {self.limit}")
        return self


def transfer_stats(released: nn.Module, private: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   space: PixelSpace, opts: TransferOptions) -> dict[str, Any]:
    """Counts and rates (percent) of PGD examples of ``released`` that fool ``private``."""
    opts.validate()
    released, private = released.eval(), private.eval()
    both = (predict(released, x).argmax(1) == y) & (predict(private, x).argmax(1) == y)
    xs, ys = x[both], y[both]
    out: dict[str, Any] = {"images": len(y), "both_correct": int(both.sum()),
                           "eps": opts.eps, "steps": opts.steps}
    if len(ys) == 0:
        return {**out, "white_box_hits": 0, "white_box_success": 0.0, "transfer_rate": 0.0,
                "private_fooled": 0.0, "random_noise_fooled": 0.0}
    adv = pgd_worst(released, xs, ys, space, opts.eps, opts.steps, restarts=opts.restarts,
                    seed=opts.seed)
    fooled_released = predict(released, adv).argmax(1) != ys
    fooled_private = predict(private, adv).argmax(1) != ys
    gen = torch.Generator().manual_seed(opts.seed + 17)
    signs = torch.randint(0, 2, xs.shape, generator=gen).float() * 2 - 1
    lo, hi = space.bounds(xs)
    noisy = torch.minimum(torch.maximum(xs + signs * space.scale(opts.eps, xs), lo), hi)
    noise_fooled = predict(private, noisy).argmax(1) != ys
    n, hits = len(ys), int(fooled_released.sum())
    return {**out, "white_box_hits": hits,
            "white_box_success": 100.0 * hits / n,
            "transfer_rate": 100.0 * int((fooled_released & fooled_private).sum()) / max(1, hits),
            "private_fooled": 100.0 * int(fooled_private.sum()) / n,
            "random_noise_fooled": 100.0 * int(noise_fooled.sum()) / n}


def measure_transfer(released: nn.Module, private: nn.Module, data: DataSplits,
                     opts: TransferOptions, split: str = "test") -> dict[str, Any]:
    part = getattr(data, split)
    n = len(part) if opts.limit is None else min(opts.limit, len(part))
    stats = transfer_stats(released, private, part.x[:n], part.y[:n], PixelSpace.of(data), opts)
    return {**stats, "split": split, "options": asdict(opts)}
