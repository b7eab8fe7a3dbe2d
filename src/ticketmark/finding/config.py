"""``FindConfig``: the finder's flags, the saved ``hparams.json`` and the run's identity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.sparsity import PrunePolicy
from ticketmark.training import TrainConfig


@dataclass
class FindConfig:
    method: str = "imp"
    model: str = "conv4"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    rounds: int = 5
    rate: float = 0.2  # IMP: fraction of the remaining weights pruned per round
    sparsity: float = 0.8  # one-shot finders: target sparsity
    rewind_epoch: int = 0
    scope: str = "global"
    include_stem: bool = False
    include_linear: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    extra: dict[str, Any] = field(default_factory=dict)  # finder-specific knobs

    @property
    def policy(self) -> PrunePolicy:
        return PrunePolicy(self.include_stem, self.include_linear)

    def validate(self) -> FindConfig:
        if self.rounds < 0:
            raise TicketmarkError(f"rounds must be >= 0, got {self.rounds}")
        if not 0.0 <= self.rate < 1.0:
            raise TicketmarkError(f"pruning rate must be in [0, 1), got {self.rate}")
        if not 0.0 <= self.sparsity < 1.0:
            raise TicketmarkError(f"target sparsity must be in [0, 1), got {self.sparsity}")
        if self.rewind_epoch < 0 or self.rewind_epoch > self.train.epochs:
            raise TicketmarkError(
                f"rewind epoch must be in [0, epochs={self.train.epochs}], got {self.rewind_epoch}"
            )
        if self.scope not in {"global", "layer"}:
            raise TicketmarkError(f"scope must be 'global' or 'layer', got {self.scope!r}")
        self.train.with_model_defaults(self.model).validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        # The recipe serialises itself, so runs saved before a field was added still resume.
        return {**asdict(self), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FindConfig:
        d = dict(d)
        train = TrainConfig.from_dict(d.pop("train", {}))
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known, train=train)
