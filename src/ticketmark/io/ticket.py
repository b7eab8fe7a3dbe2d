"""A ticket = architecture + mask + rewind weights + trained weights + metadata.

File layout: ``NAME.safetensors`` holds tensors under the prefixes ``state.`` (the trained
state dict, buffers included), ``mask.`` and ``rewind.``; ``NAME.json`` beside it holds
the architecture, dataset, sparsity, metrics and the history of what was done to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from ticketmark import __version__
from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_bytes, atomic_write_json
from ticketmark.models import build_model
from ticketmark.sparsity.mask import Mask

FORMAT = "ticketmark-ticket/1"


@dataclass
class Ticket:
    model_name: str
    dataset: str
    in_channels: int
    num_classes: int
    image_size: int
    state: dict[str, torch.Tensor]
    mask: Mask
    rewind: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def build(self, weights: str = "trained") -> nn.Module:
        """A fresh module holding the trained (or rewind) weights with the mask applied."""
        model = build_model(self.model_name, self.in_channels, self.num_classes, self.image_size)
        source = self.state if weights == "trained" else self.rewind
        if source is None:
            raise TicketmarkError("this ticket has no rewind weights")
        load_state(model, source)
        self.mask.apply(model)
        return model

    def with_model(self, model: nn.Module, mask: Mask | None = None, **meta: Any) -> Ticket:
        """A copy with ``model``'s weights (and optionally a new mask) and merged metadata."""
        return Ticket(self.model_name, self.dataset, self.in_channels, self.num_classes,
                      self.image_size, state_of(model), (mask or self.mask).clone(),
                      self.rewind, {**self.meta, **meta})

    def fingerprint(self) -> str:
        return fingerprint(self.mask, self.rewind)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise TicketmarkError(
            f"weights do not match the architecture (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise TicketmarkError(f"weight {k} has shape {tuple(v.shape)}, expected "
                                  f"{tuple(own[k].shape)}")
    model.load_state_dict(state)


def fingerprint(mask: Mask, rewind: dict[str, torch.Tensor] | None) -> str:
    """SHA-256 over the mask bits and the rewind weights: the ticket's identity."""
    h = hashlib.sha256(b"ticketmark-fingerprint/1")
    for name in sorted(mask):
        h.update(name.encode())
        h.update(mask[name].numpy().tobytes())
    for name in sorted(rewind or {}):
        h.update(name.encode())
        h.update(rewind[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_ticket_path(path: str | Path) -> Path:
    """Accept ``x.safetensors``, ``x.json``, ``x`` or a run directory holding ``ticket.*``."""
    p = Path(path)
    if p.is_dir():
        p = p / "ticket.safetensors"
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    return p


def save_ticket(path: str | Path, ticket: Ticket) -> Path:
    path = resolve_ticket_path(path)
    tensors = {f"state.{k}": v.contiguous() for k, v in ticket.state.items()}
    tensors |= {f"mask.{k}": v.to(torch.uint8).contiguous() for k, v in ticket.mask.items()}
    if ticket.rewind is not None:
        tensors |= {f"rewind.{k}": v.contiguous() for k, v in ticket.rewind.items()}
    # Derived fields come last so stale copies carried in ``meta`` never override them.
    sidecar = {
        **ticket.meta,
        "format": FORMAT,
        "software": f"ticketmark {__version__}",
        "model": ticket.model_name,
        "dataset": ticket.dataset,
        "in_channels": ticket.in_channels,
        "num_classes": ticket.num_classes,
        "image_size": ticket.image_size,
        "sparsity": ticket.mask.sparsity(),
        "layer_density": ticket.mask.layer_density(),
        "fingerprint": ticket.fingerprint(),
    }
    atomic_write_bytes(path, save(tensors, metadata={"format": FORMAT}))
    atomic_write_json(path.with_suffix(".json"), sidecar)
    return path


def load_ticket(path: str | Path) -> Ticket:
    given = Path(path)
    path = resolve_ticket_path(path)
    side = path.with_suffix(".json")
    if not path.is_file():
        if given.is_file():  # e.g. a key or claim given where a ticket was meant
            raise TicketmarkError(f"{given} is not a ticket (a ticket is NAME.safetensors "
                                  "with its NAME.json, or a run directory)")
        looked = f" (looked for {path})" if path != given else ""
        raise TicketmarkError(f"no ticket at {given}{looked}")
    if not side.is_file():
        raise TicketmarkError(f"{path} has no JSON sidecar ({side.name})")
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise TicketmarkError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        meta = json.loads(side.read_text())
        model, dataset = str(meta["model"]), str(meta["dataset"])
        dims = int(meta["in_channels"]), int(meta["num_classes"]), int(meta["image_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TicketmarkError(f"{side} is not a ticket sidecar ({exc})") from None
    if meta.get("format") != FORMAT:
        raise TicketmarkError(f"{side} has format {meta.get('format')!r}, expected {FORMAT!r}")

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    rewind = group("rewind.") or None
    ticket = Ticket(model, dataset, *dims, state=group("state."), mask=Mask(group("mask.")),
                    rewind=rewind, meta={k: v for k, v in meta.items()
                                         if k not in {"model", "dataset", "in_channels",
                                                      "num_classes", "image_size"}})
    probe = ticket.build()  # validates shapes against the architecture
    # safetensors sorts keys; restore the model's forward order, which the lock walks.
    order = [n for n, _ in probe.named_parameters() if n in ticket.mask]
    ticket.mask = Mask({n: ticket.mask[n] for n in order})
    return ticket
