"""A ticket = architecture + mask + rewind weights + trained weights + metadata.

File layout: ``NAME.safetensors`` holds tensors under the prefixes ``state.`` (the trained
state dict, buffers included), ``mask.`` and ``rewind.``; ``NAME.json`` beside it holds
the architecture, dataset, sparsity, metrics and the history of what was done to it, and
the SHA-256 of the safetensors file, so a pair torn apart (a kill between the two renames,
a copy of one file only) is refused instead of read with the wrong metadata.

Tickets arrive from thieves too: ``load_ticket`` checks every sidecar field by type and
range and every tensor against the architecture (built on the meta device, so a sidecar
claiming 10**12 classes allocates nothing) before building the model.
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

from ticketmark import __version__, usercode
from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_group
from ticketmark.io.untrusted import (
    check_float,
    check_int,
    check_list_of_dicts,
    check_str,
    read_bytes_limited,
    read_json,
    show,
)
from ticketmark.models import MODELS, build_model
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


MAX_TICKET_BYTES = 4 * 1024**3  # the whole file is read (and hashed) into memory
MAX_SIDECAR_BYTES = 16 * 1024**2
# Wide enough for any dataset ticketmark trains on, narrow enough that no arithmetic on
# them overflows; the tensors in the file decide the rest (see ``_check_tensors``).
DIM_RANGES = {"in_channels": (1, 4096), "num_classes": (1, 1_000_000), "image_size": (1, 8192)}
_PREFIXES = ("state.", "mask.", "rewind.")


def save_ticket(path: str | Path, ticket: Ticket) -> Path:
    """Write NAME.safetensors and NAME.json as a pair (see ``atomic_write_group``)."""
    path = resolve_ticket_path(path)
    tensors = {f"state.{k}": v.contiguous() for k, v in ticket.state.items()}
    tensors |= {f"mask.{k}": v.to(torch.uint8).contiguous() for k, v in ticket.mask.items()}
    if ticket.rewind is not None:
        tensors |= {f"rewind.{k}": v.contiguous() for k, v in ticket.rewind.items()}
    blob = save(tensors, metadata={"format": FORMAT})
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
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    atomic_write_group({path: blob, path.with_suffix(".json"): text.encode()})
    return path


def _parse_sidecar(meta: Any, side: Path) -> tuple[str, str, tuple[int, int, int]]:
    """Model, dataset and dimensions from a sidecar, every field checked by type and range."""
    src = str(side)
    if not isinstance(meta, dict):
        raise TicketmarkError(f"{side} is not a ticket sidecar (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise TicketmarkError(f"{side} has format {show(meta.get('format'))}, expected "
                              f"{FORMAT!r}")
    for key in ("model", "dataset", "in_channels", "num_classes", "image_size"):
        if key not in meta:
            raise TicketmarkError(f"{side} is not a ticket sidecar (no {key!r})")
    model = check_str(meta["model"], "model", src, 1000)
    if usercode.is_spec(model):
        usercode.split_spec(model)  # well-formed; imported only if the user allows it
    elif model not in MODELS:
        raise TicketmarkError(f"{side}: unknown model {show(model)} (known: "
                              f"{', '.join(MODELS)}, or an import string)")
    dataset = check_str(meta["dataset"], "dataset", src, 1000)
    dims = tuple(check_int(meta[k], k, lo, hi, src) for k, (lo, hi) in DIM_RANGES.items())
    for key in ("metrics", "history"):
        if key in meta:
            check_list_of_dicts(meta[key], key, src)
    for entry in meta.get("metrics", []):
        if entry.get("test_acc") is not None:
            check_float(entry["test_acc"], "metrics test_acc", -1e9, 1e9, src)
    if meta.get("train") is not None and not isinstance(meta["train"], dict):
        raise TicketmarkError(f"{side}: train must be an object, got {show(meta['train'])}")
    if meta.get("rewind_epoch") is not None:
        check_int(meta["rewind_epoch"], "rewind_epoch", 0, 1_000_000, src)
    return model, dataset, dims  # type: ignore[return-value]


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], skeleton: nn.Module) -> None:
    """The file's tensors against the architecture the sidecar names, before building it.

    ``skeleton`` lives on the meta device: its shapes cost no memory, so a sidecar that
    claims 10**12 classes fails here instead of allocating terabytes.
    """
    for key in tensors:
        if not key.startswith(_PREFIXES):
            raise TicketmarkError(f"{path}: unexpected tensor {show(key)} (a ticket holds only "
                                  "state., mask. and rewind. tensors)")
    expected = skeleton.state_dict()
    params = dict(skeleton.named_parameters())
    for prefix in ("state.", "rewind."):
        group = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if prefix == "rewind." and not group:
            continue
        missing, unexpected = sorted(set(expected) - set(group)), sorted(set(group) - set(expected))
        if missing or unexpected:
            raise TicketmarkError(f"{path}: {prefix[:-1]} weights do not match the "
                                  f"architecture (missing {missing[:3]}, unexpected "
                                  f"{[show(u) for u in unexpected[:3]]})")
        for k, v in group.items():
            if v.shape != expected[k].shape:
                raise TicketmarkError(f"{path}: weight {k} has shape {tuple(v.shape)}, "
                                      f"expected {tuple(expected[k].shape)}")
            if v.dtype.is_floating_point != expected[k].dtype.is_floating_point \
                    or v.dtype.is_complex:
                raise TicketmarkError(f"{path}: weight {k} has dtype {v.dtype}, expected "
                                      f"{expected[k].dtype}")
    for k, v in tensors.items():
        if not k.startswith("mask."):
            continue
        name = k[len("mask."):]
        if name not in params or params[name].shape != v.shape:
            raise TicketmarkError(f"{path}: mask {show(name)} of shape {tuple(v.shape)} "
                                  "matches no weight of the architecture")
        if v.dtype != torch.bool and (v.dtype.is_complex or not bool(((v == 0) | (v == 1)).all())):
            raise TicketmarkError(f"{path}: mask {name} holds values other than 0 and 1 "
                                  "(a mask says kept or pruned, nothing else)")


def load_ticket(path: str | Path) -> Ticket:
    """Read a ticket pair, refusing anything malformed with one line (never a traceback)."""
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
    meta = read_json(side, "ticket sidecar", MAX_SIDECAR_BYTES)
    model, dataset, dims = _parse_sidecar(meta, side)
    blob = read_bytes_limited(path, MAX_TICKET_BYTES, "ticket")
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, OSError, RuntimeError, TypeError) as exc:
        raise TicketmarkError(f"{path} is not a readable safetensors file ({exc})") from None
    recorded = meta.get("weights_sha256")
    if recorded is not None and recorded != hashlib.sha256(blob).hexdigest():
        raise TicketmarkError(f"{path} does not match its sidecar {side.name} (the weights' "
                              "SHA-256 differs: the pair was not written together; restore "
                              "both files or save the ticket again)")
    # The user's own architecture is imported only if the user allowed it
    # (``ticketmark.usercode``); otherwise the ticket loads unchecked against it, in name
    # order, and only building it (``Ticket.build``) asks for that permission.
    buildable = not usercode.is_spec(model) or usercode.allowed(model)
    if buildable:
        with torch.device("meta"):
            skeleton = build_model(model, *dims)
        _check_tensors(path, tensors, skeleton)

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    # safetensors hands keys back in a different order in every process (a hash map);
    # restore the model's forward order, which the lock, derive and tests walk.
    forward = list(skeleton.state_dict()) if buildable else sorted(group("state."))

    def ordered(prefix: str) -> dict[str, torch.Tensor]:
        found = group(prefix)
        return {n: found[n] for n in forward if n in found}

    ticket = Ticket(model, dataset, *dims, state=ordered("state."), mask=Mask(ordered("mask.")),
                    rewind=ordered("rewind.") or None,
                    meta={k: v for k, v in meta.items()
                          if k not in {"model", "dataset", "in_channels", "num_classes",
                                       "image_size"}})
    if buildable:
        ticket.build()  # the real module: loads the (already checked) weights
    return ticket
