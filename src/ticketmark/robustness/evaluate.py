"""One model's robustness: clean, PGD (and AutoAttack) accuracy, accuracy under corruptions.

Every number is a top-1 accuracy in percent on the same images of the test split (the first
``limit`` of them), so rows of different models in one report compare directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from ticketmark.robustness.pgd import check_budget, pgd_worst
from ticketmark.robustness.pixels import PixelSpace
from ticketmark.training import predict


@dataclass
class RobustnessOptions:
    eps: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])
    steps: int = 20
    restarts: int = 1
    alpha: float | None = None
    corruptions: bool = True
    autoattack: bool = False
    limit: int | None = None  # None: the whole test split
    seed: int = 0

    def validate(self) -> RobustnessOptions:
        if not self.eps:
            raise TicketmarkError("give at least one eps")
        for e in self.eps:
            check_budget(e, self.steps, self.alpha)
        if self.restarts < 1:
            raise TicketmarkError(f"PGD restarts must be >= 1, got {self.restarts}")
        if self.limit is not None and self.limit < 1:
            raise TicketmarkError(f"limit must be >= 1 image, got {self.limit}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((predict(model, x).argmax(1) == y).float().mean()) if len(y) else 0.0


def eval_images(data: DataSplits, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.test) if limit is None else min(limit, len(data.test))
    return data.test.x[:n], data.test.y[:n]


def measure(model: nn.Module, data: DataSplits, opts: RobustnessOptions) -> dict[str, Any]:
    """``{"clean", "pgd": {eps: acc}, "autoattack_apgd"?, "corruptions": {kind: [5 accs]},
    "corruption_mean", "images"}`` for one model."""
    opts.validate()
    space = PixelSpace.of(data)
    x, y = eval_images(data, opts.limit)
    model = model.eval()
    out: dict[str, Any] = {"images": len(y), "clean": _accuracy(model, x, y), "pgd": {}}
    for eps in opts.eps:
        adv = pgd_worst(model, x, y, space, eps, opts.steps, restarts=opts.restarts,
                        alpha=opts.alpha, seed=opts.seed)
        out["pgd"][str(eps)] = _accuracy(model, adv, y)
    if opts.autoattack:
        from ticketmark.robustness.autoattack import autoattack_accuracy

        out["autoattack_apgd"] = {str(eps): autoattack_accuracy(model, x, y, space, eps,
                                                                seed=opts.seed)
                                  for eps in opts.eps}
    if opts.corruptions:
        table = {kind: [_accuracy(model, corrupt(x, space, kind, s, opts.seed), y)
                        for s in SEVERITIES] for kind in CORRUPTIONS}
        out["corruptions"] = table
        out["corruption_mean"] = sum(sum(v) for v in table.values()) / (
            len(CORRUPTIONS) * len(SEVERITIES))
    return out
