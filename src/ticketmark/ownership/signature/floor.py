"""The signature's weight floor, and keeping it through every later retraining.

A dark module is only as strong as its weakest weights: pruning, rounding and fine-tuning
remove the small ones first. ``embed`` therefore holds every unpruned entry of a dark
kernel at least at the layer's median |w| while it retrains (``strengthen`` after every
epoch), so the code's connections end up among the layer's stronger ones.

Any later retraining by the owner (trigger embedding from the rewind point, a second
signature) would otherwise let those weights fall back: measured on the README flow, after
``trigger embed`` only 36% of dark-kernel entries were still at or above the layer median.
``held_kernels`` finds the kernels to keep from the trained weights alone (at least
``min_entries`` unpruned entries, every one at or above the floor), so the hidden bits'
positions never need to be written anywhere, and ``holder`` re-applies the floor after
every epoch of the new training. A ticket records ``meta["signature_floor"]`` (quantile and
min_entries, no positions) when it carries a signature; ``keep_floor`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

FLOOR_KEY = "signature_floor"


@torch.no_grad()
def strengthen(model: nn.Module, name: str, dark: torch.Tensor, quantile: float) -> int:
    """Raise every unpruned entry of the dark kernels to the layer's ``quantile`` of |w|.

    ``dark`` is the (O, I) bool map of dark modules. Signs are kept. Returns how many
    entries were raised.
    """
    if quantile <= 0:
        return 0
    w = dict(model.named_parameters())[name]
    alive = w != 0
    if int(alive.sum()) < 2:
        return 0
    floor = torch.quantile(w[alive].abs().float(), quantile).to(w.dtype)
    d = dark.to(w.device)
    sel = (d if w.dim() == 2 else d[:, :, None, None]) & alive & (w.abs() < floor)
    w[sel] = torch.where(w[sel] >= 0, floor, -floor)
    return int(sel.sum())


@torch.no_grad()
def held_kernels(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
                 min_entries: int, quantile: float) -> dict[str, torch.Tensor]:
    """Per conv layer, the (O, I) kernels that carry the floor now (see module docstring)."""
    out = {}
    for name, m in mask.items():
        if m.dim() == 2:  # a linear layer: one entry per module
            m = m.view(*m.shape, 1, 1)
        if m.dim() != 4 or name not in state or m.shape[2] * m.shape[3] < min_entries:
            continue
        w = state[name].detach().abs().float().reshape(m.shape) * m
        alive = m.bool()
        if int(alive.sum()) < 2:
            continue
        floor = torch.quantile(w[alive], quantile) * (1 - 1e-5)
        count = alive.flatten(2).sum(dim=2)
        weak = (alive & (w < floor)).flatten(2).any(dim=2)
        held = (count >= min_entries) & ~weak
        if bool(held.any()):
            out[name] = held
    return out


def holder(held: Mapping[str, torch.Tensor], quantile: float
           ) -> Callable[[int, nn.Module, dict[str, Any]], bool]:
    """An epoch callback for ``training.train`` that re-applies the floor."""
    def hold(epoch: int, model: nn.Module, row: dict[str, Any]) -> bool:
        for name, dark in held.items():
            strengthen(model, name, dark, quantile)
        return False
    return hold


def keep_floor(ticket: Any, model: nn.Module
               ) -> Callable[[int, nn.Module, dict[str, Any]], bool] | None:
    """For the owner's retraining of a signed ticket: apply the floor to ``model`` now and
    return the callback that keeps it (None when the ticket carries no signature)."""
    spec = ticket.meta.get(FLOOR_KEY) if isinstance(ticket.meta, dict) else None
    if not isinstance(spec, dict):
        return None
    q, k = float(spec.get("quantile", 0.5)), int(spec.get("min_entries", 4))
    if not 0 < q < 1 or k < 1:
        return None
    held = held_kernels(ticket.state, ticket.mask, k, q)
    for name, dark in held.items():
        strengthen(model, name, dark, q)
    return holder(held, q)
