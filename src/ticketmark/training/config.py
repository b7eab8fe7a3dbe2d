"""One dataclass is the training recipe: CLI flags, the saved record and the run identity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ticketmark.errors import TicketmarkError


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None  # None: the model family's default (models.default_lr)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=list)  # empty: [epochs/2, 3*epochs/4]
    gamma: float = 0.1
    seed: int = 0
    augment: bool | None = None  # None: the dataset's default (on for CIFAR)
    device: str = "auto"
    # Adversarial training, e.g. {"method": "pgd", "eps": 0.1, "steps": 7}: every batch is
    # replaced by its attacked version (ticketmark.robustness.adversarial). None: clean.
    adversarial: dict[str, Any] | None = None

    def validate(self) -> TrainConfig:
        if self.epochs < 0:
            raise TicketmarkError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size <= 0:
            raise TicketmarkError(f"batch size must be positive, got {self.batch_size}")
        if self.lr is not None and self.lr <= 0:
            raise TicketmarkError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise TicketmarkError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise TicketmarkError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.adversarial is not None:
            from ticketmark.robustness.adversarial import AdversarialSpec

            AdversarialSpec.from_dict(self.adversarial)
        return self

    def with_model_defaults(self, model_name: str) -> TrainConfig:
        from ticketmark.models import default_lr

        if self.lr is None:
            self.lr = default_lr(model_name)
        return self

    def resolved_milestones(self) -> list[int]:
        if self.milestones:
            return sorted(self.milestones)
        return sorted({max(1, self.epochs // 2), max(1, (3 * self.epochs) // 4)})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["adversarial"] is None:  # clean runs keep the hparams.json they always had
            del d["adversarial"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)
