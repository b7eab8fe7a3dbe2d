"""Attacks on tickets: run one by name, record it in the stolen ticket's history.

The stolen model is saved as a ticket because the thief's file is all anyone has; its
mask is re-derived from the attacked weights (``Mask.from_weights``), so after ``fill``
it is dense and after ``prune`` sparser, exactly what a verifier reading the file sees.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ticketmark.attacks.batchnorm import has_batchnorm, recalibrate_bn
from ticketmark.attacks.distill import distill
from ticketmark.attacks.finetune import finetune
from ticketmark.attacks.noise import fill, noise
from ticketmark.attacks.permute import permute
from ticketmark.attacks.prune import prune
from ticketmark.attacks.quantize import effective_bits, quantize
from ticketmark.data import DataSplits, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.sparsity import Mask
from ticketmark.training import evaluate

ATTACKS: dict[str, Callable[..., nn.Module]] = {
    "finetune": finetune,
    "prune": prune,
    "quantize": quantize,
    "noise": noise,
    "fill": fill,
    "permute": permute,
    "distill": distill,
}
NEEDS_DATA = {"finetune", "distill"}
# Parameters that steer execution, not the attack: never recorded, never from a plan.
_RUNTIME = {"progress", "device", "data", "model"}
# ``prune`` may be followed by mask-keeping fine-tuning (the usual prune-then-recover).
_PRUNE_FINETUNE = {"finetune_epochs": 0, "lr": None, "thief_fraction": 0.5}
# Weight-editing attacks are followed by BatchNorm recalibration on this many of the
# thief's images (0: off), as a real thief would do; see ``attacks.batchnorm``.
RECALIBRATE = {"prune", "quantize", "noise", "fill"}
DEFAULT_RECALIBRATE = 1024
# Sidecar fields ``save_ticket`` derives from the tensors; ``load_ticket`` keeps them in
# ``meta`` and ``save_ticket`` lets ``meta`` override them, so drop them before saving.
_DERIVED_META = ("sparsity", "layer_density", "software", "format", "fingerprint")


def register_attack(kind: str, fn: Callable[..., nn.Module], needs_data: bool = False) -> None:
    """Add an attack (``fn(model, [data], **params) -> model``) to the registry."""
    ATTACKS[kind] = fn
    if needs_data:
        NEEDS_DATA.add(kind)


def attack_defaults(kind: str) -> dict[str, Any]:
    """The parameters ``kind`` accepts with their defaults (``None``: required)."""
    if kind not in ATTACKS:
        raise TicketmarkError(f"unknown attack {kind!r}; choose one of: {', '.join(ATTACKS)}")
    sig = inspect.signature(ATTACKS[kind])
    out = {n: (None if p.default is inspect.Parameter.empty else p.default)
           for n, p in sig.parameters.items() if n not in _RUNTIME}
    if kind == "finetune":
        out.pop("keep_mask")
        out["keep_mask"] = False  # bool here: keep the ticket's own mask
    if kind == "prune":
        out |= _PRUNE_FINETUNE
    if kind in RECALIBRATE:
        out["recalibrate"] = DEFAULT_RECALIBRATE
    return out


def resolve_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with ``params``; an unknown or missing parameter is one clear error."""
    defaults = attack_defaults(kind)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TicketmarkError(f"attack {kind!r} has no parameter {unknown[0]!r}; it takes: "
                              f"{', '.join(defaults)}")
    merged = {**defaults, **params}
    sig = inspect.signature(ATTACKS[kind]).parameters
    missing = [n for n, v in merged.items() if v is None and n in sig
               and sig[n].default is inspect.Parameter.empty]
    if missing:
        raise TicketmarkError(f"attack {kind!r} needs parameter {missing[0]!r}")
    return merged


def check_ticket_data(ticket: Ticket, data: DataSplits) -> None:
    expected = (ticket.in_channels, ticket.image_size, ticket.image_size)
    if data.input_shape != expected:
        raise TicketmarkError(
            f"dataset {data.name!r} has input shape {data.input_shape}, but the ticket's "
            f"{ticket.model_name} expects {expected} (trained on {ticket.dataset!r})")
    if data.num_classes != ticket.num_classes:
        raise TicketmarkError(f"dataset {data.name!r} has {data.num_classes} classes, the "
                              f"ticket's model {ticket.num_classes}")


def run_attack(ticket: Ticket, model: nn.Module, kind: str, params: dict[str, Any],
               data: DataSplits | None, progress: bool = False,
               device: str = "auto") -> tuple[nn.Module, dict]:
    """Apply ``kind`` to ``model`` (the ticket's weights); return it and extra facts.

    ``device`` is where attacks that train (fine-tuning, distillation, prune-then-tune)
    run; it is execution, not the attack, so it is never recorded in the history.
    """
    p = dict(params)
    if kind in NEEDS_DATA and data is None:
        raise TicketmarkError(f"attack {kind!r} needs data to train on")
    images = int(p.pop("recalibrate", 0) or 0)
    out, extra = _run_one(ticket, model, kind, p, data, progress, device)
    if images > 0 and data is not None and has_batchnorm(out):
        out = recalibrate_bn(out, data, images=images)
        extra["recalibrated"] = True
    return out, extra


def _run_one(ticket: Ticket, model: nn.Module, kind: str, p: dict[str, Any],
             data: DataSplits | None, progress: bool,
             device: str = "auto") -> tuple[nn.Module, dict]:
    extra: dict[str, Any] = {}
    fn = ATTACKS[kind]
    if kind == "finetune":
        keep = Mask.from_weights(model, list(ticket.mask)) if p.pop("keep_mask") else None
        return fn(model, data, keep_mask=keep, progress=progress, device=device, **p), extra
    if kind == "prune":
        tune = {k: p.pop(k) for k in _PRUNE_FINETUNE}
        if p.get("names") is None:  # the layers the owner pruned (stem too, if it was)
            p["names"] = list(ticket.mask)
        out = fn(model, **p)
        if int(tune["finetune_epochs"]) > 0:
            if data is None:
                raise TicketmarkError("prune with finetune_epochs > 0 needs data")
            out = finetune(out, data, epochs=int(tune["finetune_epochs"]), lr=tune["lr"],
                           keep_mask=Mask.from_weights(out, list(ticket.mask)),
                           thief_fraction=tune["thief_fraction"], seed=p.get("seed", 0),
                           progress=progress, device=device)
        return out, extra
    sig = inspect.signature(fn).parameters
    args = [data] if "data" in sig else []
    kwargs: dict[str, Any] = {"progress": progress} if "progress" in sig else {}
    if "device" in sig:
        kwargs["device"] = device
    out = fn(model, *args, **p, **kwargs)
    if kind == "quantize":
        extra = effective_bits(out, p.get("names")).to_json()
    return out, extra


def _acc(model: nn.Module, data: DataSplits | None) -> float | None:
    return None if data is None else round(evaluate(model, data.test)[0], 4)


def apply_attack(ticket: Ticket, kind: str, params: dict[str, Any] | None = None,
                 data: DataSplits | None = None, *, progress: bool = False,
                 acc_before: float | None = None, device: str = "auto") -> Ticket:
    """The stolen ticket after ``kind``; its ``meta["history"]`` gains one entry.

    ``data=None`` loads the ticket's own dataset (which needs no folder for the embedded
    sets); accuracies are on its test split. The entry holds every resolved parameter,
    so the attack can be re-run from the history alone. ``acc_before`` skips evaluating
    the ticket again when the caller already knows its accuracy (sweeps).
    """
    resolved = resolve_params(kind, params or {})
    if data is None:
        data = load_dataset(ticket.dataset)
    check_ticket_data(ticket, data)
    model = ticket.build()
    if acc_before is None:
        acc_before = _acc(model, data)
    attacked, extra = run_attack(ticket, model, kind, resolved, data, progress=progress,
                                 device=device)
    acc_after = _acc(attacked, data)
    mask = Mask.from_weights(attacked, list(ticket.mask))
    entry = {"kind": kind, "params": _jsonable(resolved), "acc_before": acc_before,
             "acc_after": acc_after, "sparsity_after": round(mask.sparsity(), 6), **extra}
    history = [*ticket.meta.get("history", []), entry]
    # metrics[-1] is what ``info`` and reports show: make it describe these weights.
    metrics = [*ticket.meta.get("metrics", []), {"test_acc": acc_after, "attack": kind}]
    stolen = ticket.with_model(attacked, mask=mask, history=history, metrics=metrics)
    for key in _DERIVED_META:  # stale copies read from the owner's sidecar would win
        stolen.meta.pop(key, None)
    return stolen


def attack_file(src: str | Path, dst: str | Path, kind: str,
                params: dict[str, Any] | None = None, data: DataSplits | None = None, *,
                progress: bool = False) -> Ticket:
    """Load a ticket, attack it and save the stolen ticket (nothing written on failure)."""
    stolen = apply_attack(load_ticket(src), kind, params, data, progress=progress)
    save_ticket(dst, stolen)
    return stolen


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
