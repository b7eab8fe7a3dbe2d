"""Train a trigger set into a ticket: from its rewind point, keeping its mask.

The training split becomes the owner's data plus the trigger set repeated ``repeat`` times,
so that triggers make up about ``ratio`` of every epoch; everything else (recipe, seed,
mask, rewind weights) is the ticket's own, so the result has the plain ticket's
fingerprint and, ideally, its accuracy. Oversampling instead of a separate trigger loss
keeps the one shared training loop (``ticketmark.training.train``) in charge.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ticketmark.data import DataSplits, Split, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.ownership.trigger.commitment import commitment, secret_hash
from ticketmark.ownership.trigger.folder import folder_hash, load_folder
from ticketmark.ownership.trigger.generate import (
    GENERATOR_VERSION,
    TriggerParams,
    TriggerSet,
    generate,
)
from ticketmark.training import TrainConfig, evaluate, predict, train


@dataclass
class EmbedConfig:
    size: int = 100  # trigger slots
    ratio: float = 0.2  # target share of trigger samples in each epoch
    epochs: int | None = None  # None: the ticket's own recipe
    lr: float | None = None  # None: the ticket's own recipe
    avoid_natural: bool = False  # exclude slots whose label the plain model already predicts
    data_dir: str | None = None
    device: str = "auto"

    def validate(self) -> EmbedConfig:
        if not 0.0 < self.ratio < 1.0:
            raise TicketmarkError(f"trigger ratio must be in (0, 1), got {self.ratio}")
        if self.epochs is not None and self.epochs < 1:
            raise TicketmarkError(f"epochs must be >= 1, got {self.epochs}")
        return self


@dataclass
class EmbedResult:
    ticket: Ticket
    trigger: TriggerSet
    claim_params: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


def params_for(ticket: Ticket, data: DataSplits, size: int) -> TriggerParams:
    """Trigger parameters matching the ticket's inputs: shape, classes, intensity range."""
    lo, hi = float(data.train.x.min()), float(data.train.x.max())
    return TriggerParams(size, ticket.in_channels, ticket.image_size, ticket.image_size,
                         ticket.num_classes, round(lo, 4), round(hi, 4)).validate()


def claim_params(kind: str, secret_digest: str, params: TriggerParams,
                 excluded: list[int]) -> dict[str, Any]:
    """What goes into the signed claim: public parameters and the commitment."""
    return {"kind": kind, "generator": GENERATOR_VERSION, "trigger": params.to_dict(),
            "commitment": commitment(secret_digest, kind, params.to_dict(), excluded)}


def mixed_splits(data: DataSplits, trig: TriggerSet, ratio: float) -> tuple[DataSplits, int]:
    """The owner's data with the kept trigger slots oversampled to about ``ratio``."""
    kept = trig.keep.nonzero().flatten()
    if len(kept) == 0:
        raise TicketmarkError("every trigger slot was excluded: nothing to embed")
    repeat = max(1, math.ceil(ratio * len(data.train) / ((1 - ratio) * len(kept))))
    x = torch.cat([data.train.x, trig.x[kept].repeat(repeat, 1, 1, 1)])
    y = torch.cat([data.train.y, trig.y[kept].repeat(repeat)])
    mixed = dataclasses.replace(data, train=Split(x, y))
    return mixed, repeat


def trigger_accuracy(model: torch.nn.Module, trig: TriggerSet) -> float:
    """Percentage of kept slots the model maps to their label."""
    kept = trig.keep
    if not bool(kept.any()):
        return 0.0
    pred = predict(model, trig.x[kept]).argmax(1)
    return 100.0 * float((pred == trig.y[kept]).float().mean())


def load_ticket_data(ticket: Ticket, data_dir: str | None) -> DataSplits:
    data = load_dataset(ticket.dataset, data_dir)
    if (data.in_channels, data.image_size, data.num_classes) != (
            ticket.in_channels, ticket.image_size, ticket.num_classes):
        raise TicketmarkError(f"dataset {ticket.dataset} does not match the ticket's inputs")
    return data


def embed(ticket: Ticket, cfg: EmbedConfig, *, seed: bytes | None = None,
          folder: str | Path | None = None, data: DataSplits | None = None,
          progress: bool = True) -> EmbedResult:
    """Watermark ``ticket`` with the derived set of ``seed`` (or the image ``folder``)."""
    cfg.validate()
    if (seed is None) == (folder is None):
        raise TicketmarkError("embed takes exactly one of a seed or a trigger folder")
    if folder is not None and cfg.avoid_natural:
        raise TicketmarkError("--avoid-natural works with derived sets only, not folders")
    if ticket.rewind is None:
        raise TicketmarkError("the ticket has no rewind weights: embedding retrains from them")
    if "train" not in ticket.meta:
        raise TicketmarkError("the ticket records no training recipe (meta 'train')")
    data = data if data is not None else load_ticket_data(ticket, cfg.data_dir)
    if folder is not None:
        span = params_for(ticket, data, 1)
        kind, digest = "folder", folder_hash(Path(folder))
        trig, params = load_folder(Path(folder), ticket.in_channels, ticket.image_size,
                                   ticket.image_size, ticket.num_classes, span.lo, span.hi)
    elif seed is not None:
        kind, params = "derived", params_for(ticket, data, cfg.size)
        trig, digest = generate(seed, params), secret_hash(seed)

    plain = ticket.build()
    plain_test, _ = evaluate(plain, data.test)
    if cfg.avoid_natural:
        natural = predict(plain, trig.x).argmax(1)
        trig = trig.with_excluded([int(i) for i in (natural == trig.y).nonzero().flatten()])
    plain_trigger = trigger_accuracy(plain, trig)

    recipe = TrainConfig.from_dict(ticket.meta["train"])
    recipe.device = cfg.device
    if cfg.epochs is not None:
        recipe.epochs, recipe.milestones = cfg.epochs, []
    if cfg.lr is not None:
        recipe.lr = cfg.lr
    recipe.with_model_defaults(ticket.model_name)
    mixed, repeat = mixed_splits(data, trig, cfg.ratio)
    model = ticket.build("rewind")
    result = train(model, mixed, recipe, ticket.mask, desc="embed trigger set",
                   progress=progress)
    test_acc, _ = evaluate(model, data.test)
    trig_acc = trigger_accuracy(model, trig)

    params_claim = claim_params(kind, digest, params, trig.excluded())
    report = {"kind": kind, "plain_test_acc": plain_test, "test_acc": test_acc,
              "test_acc_drop": plain_test - test_acc, "plain_trigger_acc": plain_trigger,
              "trigger_acc": trig_acc, "slots": len(trig), "kept": trig.kept,
              "repeat": repeat, "trigger_share": repeat * trig.kept / len(mixed.train),
              "epochs": recipe.epochs}
    history = [*ticket.meta.get("history", []),
               {"kind": "trigger-embed",
                "params": {**asdict(cfg), "set": kind, "commitment": params_claim["commitment"],
                           "repeat": repeat},
                "acc_before": plain_test, "acc_after": test_acc,
                "trigger_acc": trig_acc}]
    metrics = [*result.metrics[:-1], {**result.final, "test_acc": test_acc,
                                      "trigger_acc": trig_acc}] if result.metrics else []
    out = ticket.with_model(model, history=history, metrics=metrics,
                            trigger={"commitment": params_claim["commitment"],
                                     "generator": GENERATOR_VERSION, "slots": len(trig)})
    return EmbedResult(out, trig, params_claim, report)
