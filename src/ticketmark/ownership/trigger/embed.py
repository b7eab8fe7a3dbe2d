"""Train a trigger set into a ticket: from its rewind point, keeping its mask.

The training split becomes the owner's data plus the trigger images oversampled so that
they make up about ``ratio`` of every epoch; everything else (recipe, seed, mask, rewind
weights) is the ticket's own, so the result has the plain ticket's fingerprint and,
ideally, its accuracy. Oversampling instead of a separate trigger loss keeps the one shared
training loop (``ticketmark.training.train``) in charge.

For stamped marks (``patch``, ``blend``) the training images are each group's mark on the
committed base images *and* on ``train_bases`` further images of the owner's data per
group: the model learns the mark as a rule over real images rather than memorising a
hundred pictures, which is what lets it survive fine-tuning (docs/trigger.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.data import DataSplits, Split, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.ownership.keys import public_key_b64
from ticketmark.ownership.signature.floor import keep_floor
from ticketmark.ownership.trigger.commitment import (
    Reveal,
    derived_claim_params,
    folder_claim_params,
    new_nonce,
    owner_reveal,
)
from ticketmark.ownership.trigger.folder import folder_hash, load_folder
from ticketmark.ownership.trigger.generate import (
    GENERATOR_VERSION,
    MARKS,
    TriggerParams,
    TriggerSet,
    generate,
    stamp,
)
from ticketmark.ownership.trigger.hardening import HardenedTriggerStep, check_settings
from ticketmark.training import TrainConfig, evaluate, predict, train


@dataclass
class EmbedConfig:
    size: int = 100  # queries the verifier sends
    groups: int = 20  # marks, one keyed label each (abstract: one per query)
    mark: str = "patch"  # abstract, patch or blend
    alpha: float = 1.0  # opacity of the mark
    patch: int = 0  # patch side in pixels (0: default_patch(side))
    train_bases: int = 40  # further owner images per group the mark is trained on
    ratio: float = 0.2  # target share of trigger samples in each epoch
    epochs: int | None = None  # None: the ticket's own recipe
    lr: float | None = None  # None: the ticket's own recipe
    avoid_natural: bool = False  # exclude groups whose label the plain model already gives
    perturbation: str = "none"  # trigger loss taken at perturbed weights (hardening)
    rho: float = 0.05  # perturbation size, relative to each weight tensor's norm
    entangle: float = 0.0  # weight of the pull of marked features into their label's class
    data_dir: str | None = None
    device: str = "auto"

    def validate(self) -> EmbedConfig:
        if not 0.0 < self.ratio < 1.0:
            raise TicketmarkError(f"trigger ratio must be in (0, 1), got {self.ratio}")
        if self.epochs is not None and self.epochs < 1:
            raise TicketmarkError(f"epochs must be >= 1, got {self.epochs}")
        if self.mark not in MARKS:
            raise TicketmarkError(f"unknown trigger mark {self.mark!r} (one of "
                                  f"{', '.join(MARKS)})")
        if self.size < 1 or self.train_bases < 0:
            raise TicketmarkError("trigger size must be >= 1 and train bases >= 0")
        check_settings(self.perturbation, self.rho, self.entangle)
        if self.mark != "abstract" and (self.groups < 1 or self.size % self.groups):
            raise TicketmarkError(f"--groups {self.groups} must divide --size {self.size}")
        return self


@dataclass
class EmbedResult:
    ticket: Ticket
    trigger: TriggerSet
    claim_params: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    reveal: Reveal | None = None  # derived sets: what the owner reveals in a dispute
    train_x: torch.Tensor | None = None  # every trigger image trained on (kept groups)
    train_y: torch.Tensor | None = None


def params_for(ticket: Ticket, data: DataSplits, cfg: EmbedConfig | int) -> TriggerParams:
    """Trigger parameters matching the ticket's inputs: shape, classes, intensity range."""
    cfg = EmbedConfig(size=cfg, mark="abstract") if isinstance(cfg, int) else cfg
    lo, hi = float(data.train.x.min()), float(data.train.x.max())
    side = min(ticket.image_size, ticket.image_size)
    abstract = cfg.mark == "abstract"
    return TriggerParams(cfg.size, ticket.in_channels, ticket.image_size, ticket.image_size,
                         ticket.num_classes, round(lo, 4), round(hi, 4),
                         groups=0 if abstract else cfg.groups, mark=cfg.mark,
                         alpha=1.0 if abstract else cfg.alpha,
                         patch=(cfg.patch or default_patch(side)) if cfg.mark == "patch" else 0
                         ).validate()


def default_patch(side: int) -> int:
    """Three eighths of the image side, at least 3 pixels (10 on 28-pixel digits).

    A larger patch carries more keyed pixels, so marks stay told apart after a thief's
    fine-tuning: on the README's mnist5k ticket a quarter side (7 px) left 21-37/100
    matches after 3 epochs of dense Adam, 10-12 px left 40-51/100 (docs/trigger.md).
    """
    return max(3, side * 3 // 8)


def _base_order(seed: bytes, n: int) -> np.ndarray:
    """Which owner images carry the marks: a permutation drawn from the seed."""
    word = int.from_bytes(hashlib.sha256(b"ticketmark-trigger-base-order\0" + seed).digest()[:8],
                          "big")
    return np.random.default_rng(word).permutation(n)


def pick_bases(seed: bytes, params: TriggerParams, data: DataSplits, train_bases: int
               ) -> tuple[np.ndarray, torch.Tensor]:
    """The committed bases (size, C, H, W) and the training ones (G, M, C, H, W)."""
    pool = data.train.x
    need = params.size + params.n_groups * train_bases
    order = torch.from_numpy(_base_order(seed, len(pool)))
    if need > len(pool):
        order = order.repeat(-(-need // len(pool)))
    committed = pool[order[:params.size]].numpy().astype(np.float32)
    extra = pool[order[params.size:need]].reshape(params.n_groups, train_bases,
                                                  *params.shape)
    return np.ascontiguousarray(committed), extra


def oversampling(clean: int, trigger: int, ratio: float) -> int:
    """How many copies of the trigger images bring them to at least ``ratio`` of an epoch."""
    if trigger == 0:
        raise TicketmarkError("every trigger group was excluded: nothing to embed")
    return max(1, math.ceil(ratio * clean / ((1 - ratio) * trigger)))


def mixed_splits(data: DataSplits, x: torch.Tensor, y: torch.Tensor, ratio: float
                 ) -> tuple[DataSplits, int]:
    """The owner's data with the trigger images ``x, y`` oversampled to about ``ratio``."""
    repeat = oversampling(len(data.train), len(x), ratio)
    mixed = dataclasses.replace(data, train=Split(torch.cat([data.train.x,
                                                             x.repeat(repeat, 1, 1, 1)]),
                                                  torch.cat([data.train.y, y.repeat(repeat)])))
    return mixed, repeat


def training_images(seed: bytes, trig: TriggerSet, params: TriggerParams,
                    extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept committed queries plus each kept group's mark on its training bases."""
    x, y = trig.x[trig.keep], trig.y[trig.keep]
    if extra is None or extra.shape[1] == 0:
        return x, y
    labels = torch.zeros(params.n_groups, dtype=torch.long)
    labels[trig.groups] = trig.y
    kept = torch.zeros(params.n_groups, dtype=torch.bool)
    kept[trig.groups[trig.keep]] = True
    more = stamp(seed, params, extra)[kept]  # (G', M, C, H, W)
    more_y = labels[kept][:, None].expand(-1, more.shape[1])
    return torch.cat([x, more.flatten(0, 1)]), torch.cat([y, more_y.flatten()])


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


def natural_groups(model: torch.nn.Module, trig: TriggerSet) -> list[int]:
    """Groups whose label the plain model already gives to most of their queries."""
    hits = (predict(model, trig.x).argmax(1) == trig.y).float()
    share = torch.zeros(trig.n_groups).index_add_(0, trig.groups, hits)
    size = torch.bincount(trig.groups, minlength=trig.n_groups).float()
    return [int(i) for i in (share > size / 2).nonzero().flatten()]


@dataclass
class PreparedSet:
    """A derived set before training: what to train on, and what to claim and reveal."""

    trigger: TriggerSet
    params: TriggerParams
    reveal: Reveal
    nonce: str
    train_x: torch.Tensor
    train_y: torch.Tensor

    def claim_params(self) -> dict[str, Any]:
        return derived_claim_params(self.reveal, self.nonce, self.params)


def prepare_set(key: Ed25519PrivateKey, ticket: Ticket, data: DataSplits, cfg: EmbedConfig,
                nonce: str | None = None, plain: torch.nn.Module | None = None
                ) -> PreparedSet:
    """The key-bound set for a fresh (or given) nonce, its training images and reveal."""
    cfg.validate()
    nonce = nonce or new_nonce()
    params = params_for(ticket, data, cfg)
    seed = owner_reveal(key, nonce).seed
    bases, extra = (pick_bases(seed, params, data, cfg.train_bases) if params.needs_bases
                    else (None, None))
    trig = generate(seed, params, bases)
    if cfg.avoid_natural:
        trig = trig.with_excluded(natural_groups(plain or ticket.build(), trig))
    reveal = owner_reveal(key, nonce, trig.excluded(), bases)
    x_train, y_train = training_images(seed, trig, params, extra)
    return PreparedSet(trig, params, reveal, nonce, x_train, y_train)


def embed(ticket: Ticket, cfg: EmbedConfig, key: Ed25519PrivateKey, *,
          folder: str | Path | None = None, data: DataSplits | None = None,
          nonce: str | None = None, progress: bool = True) -> EmbedResult:
    """Watermark ``ticket`` with the set derived from ``key`` (or the image ``folder``).

    A derived set's seed is the hash of the key's signature over a fresh ``nonce``
    (``commitment``): the result's ``reveal`` opens the claim made with ``claim_params``
    by this key, and no other.
    """
    cfg.validate()
    if folder is not None and cfg.avoid_natural:
        raise TicketmarkError("--avoid-natural works with derived sets only, not folders")
    if ticket.rewind is None:
        raise TicketmarkError("the ticket has no rewind weights: embedding retrains from them")
    if "train" not in ticket.meta:
        raise TicketmarkError("the ticket records no training recipe (meta 'train')")
    data = data if data is not None else load_ticket_data(ticket, cfg.data_dir)
    plain = ticket.build()
    plain_test, _ = evaluate(plain, data.test)
    reveal: Reveal | None = None
    if folder is not None:
        span = params_for(ticket, data, 1)
        digest = folder_hash(Path(folder))
        trig, params = load_folder(Path(folder), ticket.in_channels, ticket.image_size,
                                   ticket.image_size, ticket.num_classes, span.lo, span.hi)
        x_train, y_train = trig.x, trig.y
    else:
        prepared = prepare_set(key, ticket, data, cfg, nonce, plain)
        trig, params, reveal, nonce = (prepared.trigger, prepared.params, prepared.reveal,
                                       prepared.nonce)
        x_train, y_train = prepared.train_x, prepared.train_y
    plain_trigger = trigger_accuracy(plain, trig)

    recipe = TrainConfig.from_dict(ticket.meta["train"])
    recipe.device = cfg.device
    if cfg.epochs is not None:
        recipe.epochs, recipe.milestones = cfg.epochs, []
    if cfg.lr is not None:
        recipe.lr = cfg.lr
    recipe.with_model_defaults(ticket.model_name)
    model = ticket.build("rewind")
    # Mixing puts trigger rows in the loader's batches, where an adversarially trained
    # recipe's PGD would perturb them too (and they were not learnt: issue 20); the step
    # draws them itself and the PGD transform sees clean rows only.
    if cfg.perturbation == "none" and cfg.entangle == 0.0 and recipe.adversarial is None:
        mixed, repeat = mixed_splits(data, x_train, y_train, cfg.ratio)
        trained_on, step = mixed, None
        share = repeat * len(x_train) / len(mixed.train)
    else:
        # The same rows per epoch and per step as mixing: each step's clean rows are the
        # loader's batch, its trigger rows are drawn by the step to make up the share.
        repeat = oversampling(len(data.train), len(x_train), cfg.ratio)
        share = repeat * len(x_train) / (len(data.train) + repeat * len(x_train))
        recipe.batch_size = max(1, round(recipe.batch_size * (1 - share)))
        step = HardenedTriggerStep(x_train, y_train, share, cfg.rho, cfg.perturbation,
                                   recipe.seed, cfg.entangle)
        trained_on = data
    # A signed ticket keeps its signature's weight floor through this retraining.
    result = train(model, trained_on, recipe, ticket.mask, desc="embed trigger set",
                   progress=progress, callback=keep_floor(ticket, model),
                   **({} if step is None else {"batch_step": step}))
    test_acc, _ = evaluate(model, data.test)
    trig_acc = trigger_accuracy(model, trig)

    if reveal is not None:
        params_claim = derived_claim_params(reveal, str(nonce), params)
    else:
        params_claim = folder_claim_params(digest, params, public_key_b64(key))
    kind = params_claim["kind"]
    report = {"kind": kind, "mark": params.mark, "groups": params.n_groups,
              "plain_test_acc": plain_test, "test_acc": test_acc,
              "test_acc_drop": plain_test - test_acc, "plain_trigger_acc": plain_trigger,
              "trigger_acc": trig_acc, "slots": len(trig), "kept": trig.kept,
              "trained_images": len(x_train), "repeat": repeat, "trigger_share": share,
              "perturbation": cfg.perturbation, "rho": cfg.rho, "entangle": cfg.entangle,
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
    return EmbedResult(out, trig, params_claim, report, reveal, x_train, y_train)
