"""Pruning by scores: exact counts, global or per layer, one top-k over all layers.

Every pruner here removes exactly ``round(amount * remaining)`` weights (ties broken by
top-k order), which is what lets tests and the lock's add-back compare counts exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.sparsity.mask import Mask


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, keep: int) -> torch.Tensor:
    flat = torch.where(alive, scores, torch.full_like(scores, float("-inf")))
    out = torch.zeros_like(alive)
    if keep > 0:
        out[torch.topk(flat, keep, sorted=False).indices] = True
    return out


def prune_by_scores(mask: Mask, scores: Mapping[str, torch.Tensor], amount: float,
                    scope: str = "global") -> Mask:
    """Remove the lowest-scoring ``amount`` fraction of the surviving weights."""
    if not 0.0 <= amount < 1.0:
        raise TicketmarkError(f"pruning amount must be in [0, 1), got {amount}")
    names = list(mask)
    if scope == "layer":
        out = {}
        for n in names:
            alive = mask[n].flatten()
            keep = int(alive.sum()) - int(round(amount * int(alive.sum())))
            kept = _keep_top(scores[n].detach().flatten().float().cpu(), alive, keep)
            out[n] = kept.view_as(mask[n])
        return Mask(out)
    if scope != "global":
        raise TicketmarkError(f"unknown pruning scope {scope!r} (expected 'global' or 'layer')")
    alive = torch.cat([mask[n].flatten() for n in names])
    flat = torch.cat([scores[n].detach().flatten().float().cpu() for n in names])
    remaining = int(alive.sum())
    kept = _keep_top(flat, alive, remaining - int(round(amount * remaining)))
    sizes = [mask[n].numel() for n in names]
    return Mask({n: part.view_as(mask[n]) for n, part in zip(names, kept.split(sizes),
                                                             strict=True)})


def magnitude_prune(model: nn.Module, mask: Mask, amount: float, scope: str = "global") -> Mask:
    params = dict(model.named_parameters())
    return prune_by_scores(mask, {n: params[n].abs() for n in mask}, amount, scope)


def random_prune(mask: Mask, amount: float, seed: int = 0, scope: str = "layer") -> Mask:
    """Random baseline; per layer by default so the layer densities match magnitude's."""
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(mask[n].shape, generator=gen) for n in mask}
    return prune_by_scores(mask, scores, amount, scope)


def density_to_amount(current_density: float, target_density: float) -> float:
    """Fraction of the remaining weights to prune to go from one density to another."""
    if current_density <= 0:
        return 0.0
    return max(0.0, 1.0 - target_density / current_density)
