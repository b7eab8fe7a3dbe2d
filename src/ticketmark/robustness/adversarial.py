"""Adversarial training as a batch transform for the shared training loop.

``TrainConfig.adversarial`` holds an ``AdversarialSpec`` as a dict (so it lands in
``hparams.json`` and a ticket's meta like every other training knob); the loop asks
``adversarial_transform`` for the callable that replaces each clean batch by its PGD
version (Madry et al.'s min-max training: the step then minimises the loss on the worst
case found). Because every finder trains through that loop, IMP, OMP, early-bird and
COLT all become adversarial finders with no change of their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.robustness.pgd import check_budget, pgd
from ticketmark.robustness.pixels import PixelSpace

METHODS = ("pgd", "fgsm")


@dataclass(frozen=True)
class AdversarialSpec:
    """``pgd``: ``steps`` steps of ``alpha`` (default 2.5 eps / steps) from a random start.
    ``fgsm``: one step of 1.25 eps from a random start (Wong et al. 2020's "fast" training,
    ``steps`` ignored), for when PGD's cost is too much.

    ``ramp_steps``: the budget grows linearly from eps / ramp_steps to eps over the first
    ``ramp_steps`` optimizer steps of each training run (the step size scales with it).
    Why: a freshly initialised network without BatchNorm trained on full-eps examples from
    step one can sit at chance for whole epochs (conv4 on mnist5k at eps 0.1: 15-18%
    validation accuracy after one PGD epoch, training loss 2.8 > ln 10), because the attack
    keeps the loss high before the network has any features to defend; growing eps from
    small to full is the usual cure (Gowal et al. 2018's IBP training ramps eps the same
    way). 0: full eps from the first step.
    """

    method: str = "pgd"
    eps: float = 0.1
    steps: int = 7
    alpha: float | None = None
    ramp_steps: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdversarialSpec:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TicketmarkError(f"adversarial training does not know {', '.join(unknown)}")
        spec = cls(**d)
        if spec.method not in METHODS:
            raise TicketmarkError(f"unknown adversarial training {spec.method!r}; choose one "
                                  f"of: {', '.join(METHODS)}")
        check_budget(spec.eps, spec.steps, spec.alpha)
        if spec.method == "pgd" and spec.steps < 1:
            raise TicketmarkError("PGD training needs at least 1 step")
        if spec.ramp_steps < 0:
            raise TicketmarkError(f"eps ramp must be >= 0 steps, got {spec.ramp_steps}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["ramp_steps"]:  # specs without a ramp keep the dict they always had
            del d["ramp_steps"]
        return d

    def eps_at(self, step: int) -> float:
        """The budget for the ``step``-th batch (0-based) of a training run."""
        if self.ramp_steps <= 0 or step >= self.ramp_steps:
            return self.eps
        return self.eps * (step + 1) / self.ramp_steps

    def attack_args(self) -> tuple[int, float | None]:
        if self.method == "fgsm":
            return 1, 1.25 * self.eps
        return self.steps, self.alpha


def adversarial_transform(spec: dict[str, Any] | AdversarialSpec, data: DataSplits,
                          seed: int = 0):  # noqa: ANN201 (a BatchTransform)
    """The loop's ``batch_transform``: (model, x, y) -> PGD examples of x, seeded.

    One transform per training run: it counts the batches it has seen for the eps ramp.
    """
    s = spec if isinstance(spec, AdversarialSpec) else AdversarialSpec.from_dict(spec)
    space = PixelSpace.of(data)
    steps, alpha = s.attack_args()
    gen = torch.Generator().manual_seed(seed + 2_147_483)
    seen = [0]

    def transform(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = s.eps_at(seen[0])
        seen[0] += 1
        step = None if alpha is None else alpha * eps / s.eps
        return pgd(model, x, y, space, eps, steps, alpha=step, generator=gen)

    return transform
