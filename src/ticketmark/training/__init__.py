"""Training with a mask that stays applied: SGD+momentum, multi-step LR, DDP via torchrun."""

from ticketmark.training.config import TrainConfig
from ticketmark.training.loop import TrainResult, evaluate, predict, train
from ticketmark.training.seeding import seed_everything

__all__ = ["TrainConfig", "TrainResult", "evaluate", "predict", "seed_everything", "train"]
