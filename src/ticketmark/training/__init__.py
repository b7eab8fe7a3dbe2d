"""Training with a mask that stays applied: SGD+momentum, multi-step LR, DDP via torchrun.

The names below are imported on first use: ``training.progress`` (the console every
command prints through) must not pull torch in with the training loop.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ticketmark.training.config import TrainConfig
    from ticketmark.training.loop import TrainResult, evaluate, predict, train
    from ticketmark.training.seeding import seed_everything

_WHERE = {"TrainConfig": "config", "TrainResult": "loop", "evaluate": "loop",
          "predict": "loop", "train": "loop", "seed_everything": "seeding"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "evaluate", "predict", "seed_everything", "train"]
