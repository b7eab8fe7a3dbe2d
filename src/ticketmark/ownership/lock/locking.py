"""Apply a selection to a ticket (lock), hide the cut (add-back) and undo it (unlock).

The locked ticket keeps the original's rewind weights, buffers and every untouched weight
bit for bit; only the mask and the trained weights at the removed and added positions
change, and the key stores exactly those, so unlocking is a scatter, not a retraining.
"""

from __future__ import annotations

from typing import Any

import torch

from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.ownership.lock.choosers import Selection
from ticketmark.ownership.lock.keyfile import LockKey
from ticketmark.sparsity.mask import Mask

# Sidecar fields that ``save_ticket`` derives from the mask: a stale copy in ``meta`` would
# override the fresh one, so a ticket whose mask changed must not carry them.
DERIVED = {"format", "fingerprint", "software", "sparsity", "layer_density"}
ADD_BACK_SCALE = 0.05


def spread_counts(room: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    """Per layer, how many connections to add back: ``counts`` where a layer has the room
    (``room``: its free pruned positions), the rest spread over layers that have room left.

    The total always equals ``sum(counts)``; the overflow goes to the layers with the most
    room left, in proportion to it (largest remainders, ties in forward order), so a dense
    layer (a shortcut a ticket kept whole) never blocks an add-back the ticket has room for.
    """
    total, space = sum(counts.values()), sum(room.values())
    if total > space:
        raise TicketmarkError(
            f"the ticket has only {space} pruned positions left, too few to add back "
            f"{total} connections; cut a smaller key (fewer --paths, or --weights/--fraction) "
            "or lock without --add-back")
    out = {name: min(counts.get(name, 0), room[name]) for name in room}
    spill = total - sum(out.values())
    if spill:
        left = {name: room[name] - out[name] for name in room}
        free = sum(left.values())
        shares = {name: spill * n / free for name, n in left.items()}
        extra = {name: min(left[name], int(share)) for name, share in shares.items()}
        order = sorted(left, key=lambda n: -(shares[n] - int(shares[n])))
        short = spill - sum(extra.values())
        while short:  # largest remainders first; a layer never exceeds its room
            for name in order:
                if short and extra[name] < left[name]:
                    extra[name] += 1
                    short -= 1
        out = {name: out[name] + extra[name] for name in room}
    return {name: n for name, n in out.items() if n}


def random_positions(mask: Mask, counts: dict[str, int], generator: torch.Generator,
                     exclude: dict[str, torch.Tensor] | None = None, *, spread: bool = False
                     ) -> dict[str, torch.Tensor]:
    """Per layer, ``counts[name]`` distinct flat indices drawn uniformly among pruned
    positions (not in ``mask``, not in ``exclude``). With ``spread``, a layer with too few
    such positions passes its surplus to layers with room (``spread_counts``)."""
    candidates = {}
    for name in mask:
        if not spread and name not in counts:
            continue
        free = ~mask[name].flatten()
        if exclude is not None and name in exclude:
            free &= ~exclude[name].flatten()
        candidates[name] = free.nonzero().squeeze(1)
    if spread:
        counts = spread_counts({n: int(c.numel()) for n, c in candidates.items()}, counts)
    out = {}
    for name, k in counts.items():
        if candidates[name].numel() < k:
            raise TicketmarkError(f"layer {name} has only {candidates[name].numel()} pruned "
                                  f"positions, too few to add back {k} connections")
        pick = torch.randperm(candidates[name].numel(), generator=generator)[:k]
        out[name] = candidates[name][pick].sort().values
    return out


def with_added(mask: Mask, added: dict[str, torch.Tensor]) -> Mask:
    """``mask`` with the flat indices ``added`` switched on."""
    out = {}
    for name, m in mask.items():
        flat = m.flatten().clone()
        if name in added:
            flat[added[name]] = True
        out[name] = flat.view_as(m)
    return Mask(out)


def lock_ticket(ticket: Ticket, selection: Selection, *, add_back: bool = False,
                seed: int = 0, params: dict[str, Any] | None = None
                ) -> tuple[Ticket, LockKey]:
    """The locked ticket (to release) and the key (to keep).

    With ``add_back`` the ticket regains as many new random connections as it lost, with
    small random weights (``ADD_BACK_SCALE`` times the layer's weight spread: nonzero, so the
    weights imply the same mask, and small, so they barely move the output), making the
    total count equal the original's. Each layer gets back what it lost where it has the
    pruned positions for it (then its count is the original's too); a layer without that
    room (one the ticket kept nearly dense) passes the rest to layers that have it.
    """
    gen = torch.Generator().manual_seed(seed * 7_919 + 11)
    counts = selection.layer_counts()
    if sum(counts.values()) == 0:
        raise TicketmarkError("the selection removes no weight; nothing to lock")
    for name, r in selection.removal.items():
        if bool((r & ~ticket.mask[name]).any()):
            raise TicketmarkError(f"selection removes weights of {name} the ticket lacks")
    added = random_positions(ticket.mask, {n: c for n, c in counts.items() if c},
                             gen, exclude=selection.removal, spread=True) if add_back else {}
    state = dict(ticket.state)
    new_mask = {}
    removed, removed_values, added_values = {}, {}, {}
    for name, m in ticket.mask.items():
        r = selection.removal.get(name)
        cut = r is not None and bool(r.any())
        if not cut and name not in added:
            new_mask[name] = m.clone()
            continue
        w = ticket.state[name]
        flat_w = w.flatten().clone()
        flat_m = m.flatten().clone()
        if cut:
            idx = r.flatten().nonzero().squeeze(1)
            removed[name], removed_values[name] = idx, flat_w[idx].clone()
            flat_m[idx] = False
            flat_w[idx] = flat_w[idx] * 0  # the same (signed) zero masking would leave
        if name in added:
            a = added[name]
            added_values[name] = flat_w[a].clone()
            kept = flat_w[flat_m]
            spread = float(kept.float().std()) if kept.numel() > 1 else 0.0
            scale = ADD_BACK_SCALE * (spread if spread > 0 else 1e-2)
            fresh = torch.randn(a.numel(), generator=gen) * scale
            fresh = torch.where(fresh == 0, torch.full_like(fresh, scale), fresh)
            flat_w[a] = fresh.to(flat_w.dtype)
            flat_m[a] = True
        state[name] = flat_w.view_as(w)
        new_mask[name] = flat_m.view_as(m)
    history = list(ticket.meta.get("history", []))
    # The released ticket says it was locked, not how: method and key size stay secret.
    history.append({"kind": "lock", "params": {"add_back": add_back}})
    meta = {k: v for k, v in ticket.meta.items() if k not in DERIVED} | {"history": history}
    locked = Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                    ticket.image_size, state, Mask(new_mask), ticket.rewind, meta)
    key = LockKey(ticket.fingerprint(), locked.fingerprint(), ticket.model_name,
                  selection.method, {**(params or {}), "level": selection.level,
                                     "add_back": add_back, "removed": sum(counts.values())},
                  removed, removed_values, added, added_values,
                  {n: c for n, c in selection.connections.items() if c.numel()},
                  dict(ticket.meta))
    return locked, key


def unlock_ticket(locked: Ticket, key: LockKey) -> Ticket:
    """The original ticket, restored bit for bit; refuses a key cut from another ticket."""
    if locked.model_name != key.model:
        raise TicketmarkError(f"the key is for a {key.model} ticket, this is a "
                              f"{locked.model_name}")
    have = locked.fingerprint()
    if have != key.locked_fingerprint:
        raise TicketmarkError(f"the key belongs to another ticket (it locks fingerprint "
                              f"{key.locked_fingerprint[:12]}, this ticket is {have[:12]})")
    state = dict(locked.state)
    new_mask = {}
    for name, m in locked.mask.items():
        if name not in key.removed and name not in key.added:
            new_mask[name] = m.clone()
            continue
        w = locked.state[name]
        flat_w, flat_m = w.flatten().clone(), m.flatten().clone()
        try:
            if name in key.added:
                flat_w[key.added[name]] = key.added_values[name].to(w.dtype)
                flat_m[key.added[name]] = False
            if name in key.removed:
                flat_w[key.removed[name]] = key.removed_values[name].to(w.dtype)
                flat_m[key.removed[name]] = True
        except (IndexError, KeyError, RuntimeError) as exc:
            raise TicketmarkError(f"the key does not fit layer {name} ({exc})") from None
        state[name] = flat_w.view_as(w)
        new_mask[name] = flat_m.view_as(m)
    unknown = (set(key.removed) | set(key.added)) - set(locked.mask)
    if unknown:
        raise TicketmarkError(f"the key names layers this ticket lacks: {sorted(unknown)[:3]}")
    meta = key.original_meta or {k: v for k, v in locked.meta.items() if k not in DERIVED}
    restored = Ticket(locked.model_name, locked.dataset, locked.in_channels,
                      locked.num_classes, locked.image_size, state, Mask(new_mask),
                      locked.rewind, meta)
    if restored.fingerprint() != key.original_fingerprint:
        raise TicketmarkError("unlocking did not reproduce the original ticket's fingerprint; "
                              "the key is damaged")
    return restored
