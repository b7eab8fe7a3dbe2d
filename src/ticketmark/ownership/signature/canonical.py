"""A channel order computed from the network's function: undoes a permutation without the
owner's reference ticket.

Permuting channels is free for a thief and scrambles every position the signature uses.
``--reference`` re-aligns the suspect to the owner's ticket, but a verifier may not have
it. Instead, every permutable channel group (``attacks.permute.channel_groups``: the
residual streams and each block's inner channels) is ordered by a statistic of what the
channel *computes* on fixed probe inputs: the fraction of positive outputs of the first
conv writing into the group: mean / mean-absolute output, tie-broken (channels whose
outputs all share a sign) by standard deviation / mean-absolute output. Both are
unchanged by a permutation (they follow the channel), by any positive per-channel
rescaling (BatchNorm-compensated or through a ReLU), and nearly so by tiny fills.

At embedding, the claim records the release's canonical order (``orders``). At
verification the suspect's order is computed the same way, and old channel
``claim_order[k]`` is read from suspect channel ``suspect_order[k]``. Training changes the
statistic, so after fine-tuning near-ties may swap: the verifier reads both the suspect as
it is and the canonically re-ordered suspect and keeps the better, at a factor 2 on p.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ticketmark.attacks.permute import channel_groups

PROBES = 128


def _probe_inputs(model: nn.Module, shape: tuple[int, int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(20211206)
    return torch.randn((PROBES, *shape), generator=gen)


@torch.no_grad()
def channel_orders(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, list[int]]:
    """group label -> channel indices in canonical order, for every permutable group."""
    model = model.eval()
    groups = channel_groups(model)
    mods = dict(model.named_modules())
    writers: dict[str, str] = {}
    for g in groups:
        for m in g.members:
            name = m.key.rsplit(".", 1)[0]
            if m.dim == 0 and m.key.endswith("weight") and isinstance(mods.get(name),
                                                                        nn.Conv2d):
                writers[g.label] = name
                break
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for label, name in writers.items():
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, label: str = label) -> None:
            o = out.transpose(0, 1).reshape(out.shape[1], -1)
            o = o.double()
            mean_abs = o.abs().mean(1).clamp_min(1e-300)
            ratio = o.mean(1) / mean_abs
            spread = o.std(1) / mean_abs
            stats[label] = torch.stack([ratio, spread], 1)
        hooks.append(mods[name].register_forward_hook(hook))
    try:
        model(_probe_inputs(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
    orders = {}
    for label, s in stats.items():
        # the signed ratio first; it ties (at -1 or 1) only for channels whose outputs all
        # share a sign, and those are told apart by their spread
        idx = torch.argsort(s[:, 1], stable=True)
        idx = idx[torch.argsort(s[idx, 0], stable=True)]
        orders[label] = [int(i) for i in idx]
    return orders


def layer_axes(model: nn.Module) -> dict[str, tuple[str | None, str | None]]:
    """conv weight name -> (label of its output-channel group, of its input-channel group)."""
    out: dict[str, list[str | None]] = {}
    for g in channel_groups(model):
        for m in g.members:
            if m.key.endswith("weight") and m.dim in (0, 1) and m.block == 1:
                out.setdefault(m.key, [None, None])[m.dim] = g.label
    return {k: (v[0], v[1]) for k, v in out.items()}


def realign(conn: torch.Tensor, axes: tuple[str | None, str | None],
            claim_orders: dict[str, list[int]], suspect_orders: dict[str, list[int]]
            ) -> torch.Tensor | None:
    """The suspect layer's connectivity in the release's channel order (None if unknown)."""
    idx = []
    for dim, label in enumerate(axes):
        size = conn.shape[dim]
        if label is None:
            idx.append(torch.arange(size))
            continue
        a, b = claim_orders.get(label), suspect_orders.get(label)
        if not (_is_permutation(a, size) and _is_permutation(b, size)):
            return None  # unknown group, or a claim whose order is not a permutation
        m = torch.empty(size, dtype=torch.long)
        m[torch.tensor(a)] = torch.tensor(b)  # release channel a[k] <- suspect channel b[k]
        idx.append(m)
    return conn[idx[0]][:, idx[1]]


def _is_permutation(order: Any, size: int) -> bool:
    return (isinstance(order, list) and len(order) == size
            and all(isinstance(i, int) and not isinstance(i, bool) for i in order)
            and sorted(order) == list(range(size)))
