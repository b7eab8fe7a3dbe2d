"""Ternary tickets: quantisation-aware training of a ticket to weights {-a, 0, +a} per layer.

The thief's ``attack quantize --scheme ternary`` rounds a trained ticket once (TWN, Li &
Liu 2016: threshold delta = t x mean |w|, a = mean of the |w| above delta). The owner can
do better by training *through* the rounding: every forward pass uses the ternary weights,
the gradient is applied to the latent float weights as if the rounding were the identity
(the straight-through estimator), and the ternary values are re-derived from the moved
latent weights at the next step. The mask is kept throughout (pruned weights stay zero;
the threshold may also zero some kept ones, which the compact format records apart from
pruned ones, ``ticketmark.io.ternary``).

Why the credentials survive: the mask (and so the ticket's fingerprint and the QR's
connectivity) is untouched, the signature floor of a signed ticket is re-applied to the
latent weights after every epoch exactly as ``trigger embed`` does (so a dark kernel's
entries stay above the threshold), and training starts from the released weights that
already answer the trigger set. ``ternarize`` measures both on the result instead of
assuming it.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketmark.attacks.common import weight_names
from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.io.ternary import TernaryLayer, encode_layer
from ticketmark.training import TrainConfig, evaluate, train
from ticketmark.training.loop import cross_entropy_step


@dataclass
class TernaryConfig:
    """The quantisation-aware training recipe (recorded in the ticket's history)."""

    epochs: int = 5
    lr: float = 0.01
    threshold: float = 0.7  # TWN's delta = threshold x mean surviving |w|
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 0.0  # the latent weights are not the model; no reason to shrink them
    seed: int = 0
    device: str = "auto"
    trigger_ratio: float = 0.2  # share of trigger rows per epoch when a trigger set is kept

    def validate(self) -> TernaryConfig:
        if not 0.0 < self.threshold < 2.0:
            raise TicketmarkError(f"ternary threshold must be in (0, 2), got {self.threshold}")
        if not 0.0 < self.trigger_ratio < 1.0:
            raise TicketmarkError(f"trigger ratio must be in (0, 1), got {self.trigger_ratio}")
        self.train_config().validate()
        return self

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay,
                           seed=self.seed, device=self.device)


@torch.no_grad()
def ternary_values(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """TWN rounding of one weight: {-a, 0, +a}, the same rule as the thief's attack.

    delta and a are taken over the surviving (non-zero) entries only, so a sparser ticket
    is not rounded with a smaller threshold.
    """
    mag = w.abs()
    alive = mag > 0
    if not bool(alive.any()):
        return torch.zeros_like(w)
    delta = threshold * mag[alive].mean()
    keep = mag > delta
    if not bool(keep.any()):
        return torch.zeros_like(w)
    a = mag[keep].mean()
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    return torch.where(keep, torch.where(w > 0, a, -a), zero)


class TernaryStep:
    """A ``batch_step`` for ``training.train``: forward and backward through ternary weights,
    then put the latent weights back, so the optimizer moves the latent ones (STE)."""

    def __init__(self, weights: list[nn.Parameter], threshold: float):
        self.weights = weights
        self.threshold = threshold

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        latent = [w.detach().clone() for w in self.weights]
        with torch.no_grad():
            for w in self.weights:
                w.copy_(ternary_values(w, self.threshold))
        try:
            return cross_entropy_step(net, x, y)
        finally:
            with torch.no_grad():
                for w, keep in zip(self.weights, latent, strict=True):
                    w.copy_(keep)


def ternary_layers(model: nn.Module) -> list[str]:
    """Every Conv2d/Linear weight: the set the thief's ternary attack rounds too."""
    return weight_names(model)


def round_model(model: nn.Module, names: list[str], threshold: float, mask: Any
                ) -> tuple[nn.Module, dict[str, TernaryLayer]]:
    """A copy with every ``names`` weight ternary, built through the compact codec so the
    float weights equal what ``load_ternary`` will read back, bit for bit."""
    out = copy.deepcopy(model).cpu()
    params = dict(out.named_parameters())
    layers = {}
    with torch.no_grad():
        for n in names:
            w = ternary_values(params[n].detach().float(), threshold)
            layer = encode_layer(w, mask.get(n), n)
            params[n].copy_(layer.decode())
            layers[n] = layer
    return out, layers


@torch.no_grad()
def recalibrate(model: nn.Module, data: DataSplits, batch_size: int = 256) -> None:
    """BatchNorm statistics as a cumulative average over the owner's training images under
    the final ternary weights (the running averages saw the latent weights move)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    for i in range(0, len(data.train.x), batch_size):
        model(data.train.x[i:i + batch_size])
    model.train(was)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


@dataclass
class KeptTrigger:
    """The owner's trigger set, to keep training on it through the QAT."""

    x: torch.Tensor  # every trigger image ``trigger embed`` trained on
    y: torch.Tensor
    trigger: Any  # the committed TriggerSet (what a verifier queries)


def owner_trigger(claim_path: str | Path, reveal_path: str | Path, ticket: Any,
                  data: DataSplits) -> KeptTrigger:
    """Regenerate the trigger set a claim commits to, from the owner's reveal.

    Clean-data QAT alone erodes it (measured on conv2/digits: 56/100 -> 20/100, NOT OWNED),
    as any retraining without it does; with the set mixed back in at ``trigger embed``'s
    share it is learnt again in the ternary weights. The training images are rebuilt as
    ``trigger embed`` built them (the committed queries plus each group's mark on further
    owner images, their number read from the ticket's history; default 40).
    """
    from ticketmark.ownership.claims import load_claim
    from ticketmark.ownership.trigger.commitment import load_reveal, open_derived
    from ticketmark.ownership.trigger.embed import pick_bases, training_images
    from ticketmark.ownership.trigger.verify import RevealRejected, reveal_set

    claim = load_claim(claim_path)
    if claim.scheme != "trigger":
        raise TicketmarkError(f"{claim_path} is a {claim.scheme} claim, not a trigger claim")
    try:
        trig, params, kind = reveal_set(claim, Path(reveal_path))
    except RevealRejected as exc:
        raise TicketmarkError(f"{reveal_path} does not open {claim_path}: {exc}") from None
    if kind == "folder":
        return KeptTrigger(trig.x, trig.y, trig)
    seed = open_derived(claim, load_reveal(reveal_path), params)
    embedded = [h for h in ticket.meta.get("history", [])
                if isinstance(h, dict) and h.get("kind") == "trigger-embed"]
    bases = int((embedded[-1].get("params") or {}).get("train_bases", 40)) if embedded else 40
    extra = pick_bases(seed, params, data, bases)[1] if params.needs_bases else None
    x, y = training_images(seed, trig, params, extra)
    return KeptTrigger(x, y, trig)


def ternarize(ticket: Any, data: DataSplits, cfg: TernaryConfig, *, progress: bool = True,
              metrics_path: str | Path | None = None,
              keep_trigger: KeptTrigger | None = None) -> Any:
    """The ternary ticket of ``ticket``: QAT from its trained weights, mask kept.

    Returns a ``Ticket`` whose Conv/Linear weights are exactly {-a, 0, +a} per layer, with
    ``meta["ternary"]`` (threshold, scales, accuracy before QAT and of one-shot TWN
    rounding) and a history entry. ``keep_trigger`` mixes the owner's trigger images into
    every epoch (``owner_trigger``). ``ticket`` is not modified.
    """
    from ticketmark.io.ticket import Ticket, state_of
    from ticketmark.ownership.signature.floor import keep_floor
    from ticketmark.ownership.trigger.embed import mixed_splits, trigger_accuracy

    cfg.validate()
    start = time.perf_counter()
    model = ticket.build()
    names = ternary_layers(model)
    float_acc, _ = evaluate(model, data.test)
    oneshot, _ = round_model(model, names, cfg.threshold, ticket.mask)
    recalibrate(oneshot, data)
    oneshot_acc, _ = evaluate(oneshot, data.test)
    params = dict(model.named_parameters())
    step = TernaryStep([params[n] for n in names], cfg.threshold)
    floor = keep_floor(ticket, model)  # a signed ticket's dark kernels keep their floor
    rows: list[dict[str, Any]] = []

    def after_epoch(epoch: int, latent: nn.Module, row: dict[str, Any]) -> bool:
        if floor is not None:
            floor(epoch, latent, row)
        rounded, _ = round_model(latent, names, cfg.threshold, ticket.mask)
        row["ternary_val_acc"], _ = evaluate(rounded, data.val)
        row["ternary_test_acc"], _ = evaluate(rounded, data.test)
        rows.append(dict(row))
        return False

    trained_on = data
    if keep_trigger is not None:
        trained_on, _ = mixed_splits(data, keep_trigger.x, keep_trigger.y, cfg.trigger_ratio)
    train(model, trained_on, cfg.train_config(), ticket.mask, desc="ternary QAT",
          progress=progress, callback=after_epoch, batch_step=step)
    final, layers = round_model(model, names, cfg.threshold, ticket.mask)
    recalibrate(final, data)
    val_acc, _ = evaluate(final, data.val)
    test_acc, _ = evaluate(final, data.test)
    if metrics_path is not None:
        Path(metrics_path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    scales = {n: float(layer.scale) for n, layer in layers.items()}
    zeros_kept = sum(int(((layer.codes == 3)).sum()) for layer in layers.values())
    info = {"threshold": cfg.threshold, "layers": names, "scales": scales,
            "float_test_acc": float_acc, "oneshot_test_acc": oneshot_acc,
            "kept_but_zero": zeros_kept, "seconds": time.perf_counter() - start}
    if keep_trigger is not None:
        info["trigger_acc_before"] = trigger_accuracy(ticket.build(), keep_trigger.trigger)
        info["trigger_acc"] = trigger_accuracy(final, keep_trigger.trigger)
    meta = copy.deepcopy(ticket.meta)
    meta["ternary"] = info
    meta["history"] = [*meta.get("history", []),
                       {"kind": "ternarize", "params": asdict(cfg), "acc_before": float_acc,
                        "acc_after": test_acc, "oneshot_acc": oneshot_acc}]
    meta["metrics"] = [*meta.get("metrics", []),
                       {"epoch": cfg.epochs, "phase": "ternary", "val_acc": val_acc,
                        "test_acc": test_acc}]
    return Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                  ticket.image_size, state_of(final), ticket.mask.clone(),
                  None if ticket.rewind is None else dict(ticket.rewind), meta)
