"""What the issue-21 attacker does: erase an owner's QR block, or plant an owner's code.

Both read only the public claim (layer, position, size, orientation, tag): the thief has
read our docs and the claim is published.
"""

from __future__ import annotations

import torch

from ticketmark.io import Ticket
from ticketmark.ownership.claims import Claim
from ticketmark.ownership.signature import placement
from ticketmark.ownership.signature.verify import claim_params, expected_code
from ticketmark.sparsity import Mask


def _block(claim: Claim) -> tuple[str, slice, slice, torch.Tensor]:
    p = claim_params(claim)
    code = expected_code(p)
    drawn = torch.from_numpy(placement.oriented(code.modules, p["orientation"]).copy())
    rows = slice(p["row"], p["row"] + code.size)
    cols = slice(p["col"], p["col"] + code.size)
    return p["layer"], rows, cols, drawn.bool()


def overwrite_block(ticket: Ticket, claim: Claim, seed: int = 0) -> Ticket:
    """Re-randomise which kernels of the claimed block are connected (at the layer's own
    density), mask and weights alike: newly connected kernels take the rewind weights."""
    name, rows, cols, _ = _block(claim)
    g = torch.Generator().manual_seed(seed)
    mask = ticket.mask[name].clone()
    kernel_on = mask.flatten(2).any(dim=2)
    density = float(kernel_on.float().mean())
    block = mask[rows, cols]
    fresh_on = torch.rand(block.shape[:2], generator=g) < density
    template = torch.rand(block.shape, generator=g) < 0.5
    template[..., block.shape[2] // 2, block.shape[3] // 2] = True  # never an empty kernel
    new_block = template & fresh_on[..., None, None]
    mask[rows, cols] = new_block
    state = {k: v.clone() for k, v in ticket.state.items()}
    w = state[name]
    rewind = ticket.rewind[name] if ticket.rewind is not None else w
    w[rows, cols] = torch.where(new_block, torch.where(w[rows, cols] != 0, w[rows, cols],
                                                       rewind[rows, cols]), 0.0)
    new_mask = Mask({k: (mask if k == name else v.clone()) for k, v in ticket.mask.items()})
    meta = {k: v for k, v in ticket.meta.items() if k not in ("fingerprint", "sparsity",
                                                               "layer_density")}
    return Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                  ticket.image_size, state, new_mask, ticket.rewind, meta)


def plant_code(ticket: Ticket, claim: Claim) -> Ticket:
    """Draw the claim's public code into an unrelated ticket: dark kernels strong, light
    kernels empty (the framing of issue 21)."""
    name, rows, cols, drawn = _block(claim)
    state = {k: v.clone() for k, v in ticket.state.items()}
    w = state[name]
    strong = float(w.abs().max()) * 2.0 + 1e-3
    g = torch.Generator().manual_seed(1)
    signs = torch.where(torch.rand(w[rows, cols].shape, generator=g) < 0.5, -1.0, 1.0)
    dark = drawn[..., None, None].expand_as(w[rows, cols])
    w[rows, cols] = torch.where(dark, signs * strong, 0.0)
    mask = ticket.mask[name].clone()
    mask[rows, cols] = dark
    new_mask = Mask({k: (mask if k == name else v.clone()) for k, v in ticket.mask.items()})
    return Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                  ticket.image_size, state, new_mask, ticket.rewind, dict(ticket.meta))
