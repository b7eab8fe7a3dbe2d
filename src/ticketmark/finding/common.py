"""Shared steps of every finder: load data, build the model, train one round, save it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ticketmark.data import DataSplits, load_dataset
from ticketmark.finding.config import FindConfig
from ticketmark.finding.layout import RunDir, round_row
from ticketmark.io import Ticket
from ticketmark.io.ticket import load_state, state_of
from ticketmark.models import build_model
from ticketmark.sparsity import Mask
from ticketmark.training import TrainResult, seed_everything, train


def prepare(cfg: FindConfig) -> tuple[DataSplits, nn.Module]:
    """The data and a freshly initialised model (seeded, so every rank agrees)."""
    data = load_dataset(cfg.dataset, cfg.data_dir)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, data.in_channels, data.num_classes, data.image_size)
    return data, model


def make_ticket(cfg: FindConfig, data: DataSplits, model: nn.Module, mask: Mask,
                rewind: dict[str, torch.Tensor] | None, **meta: Any) -> Ticket:
    return Ticket(cfg.model, cfg.dataset, data.in_channels, data.num_classes, data.image_size,
                  state_of(model), mask.clone(), rewind,
                  {"train": cfg.train.to_dict(), "rewind_epoch": cfg.rewind_epoch,
                   "method": cfg.method, **meta})


def train_round(cfg: FindConfig, data: DataSplits, model: nn.Module, mask: Mask,
                run: RunDir, r: int, *, rewind_epoch: int | None = None,
                progress: bool = True, desc: str | None = None,
                epochs: int | None = None) -> TrainResult:
    train_cfg = cfg.train if epochs is None else type(cfg.train)(**{**cfg.train.to_dict(),
                                                                      "epochs": epochs})
    return train(model, data, train_cfg, mask, rewind_epoch=rewind_epoch,
                 metrics_path=run.round_dir(r) / "metrics.jsonl",
                 desc=desc or f"round {r} ({100 * mask.sparsity():.1f}% sparse)",
                 progress=progress)


def from_rewind(model_template: nn.Module, rewind: dict[str, torch.Tensor], mask: Mask
                ) -> nn.Module:
    """A copy of the architecture at the rewind point, with the mask applied."""
    import copy

    model = copy.deepcopy(model_template)
    load_state(model, rewind)
    mask.apply(model)
    return model


def summary_row(r: int, ticket: Ticket, epochs: int) -> dict[str, Any]:
    return round_row(r, ticket, epochs)
