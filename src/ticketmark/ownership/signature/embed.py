"""Draw a signed QR code into a ticket's channel connectivity, then retrain it.

Steps (``embed_signature``):

1. tag = truncated hash of (owner public key, message, ticket fingerprint); QR it at
   error level H in the smallest version, under all 8 mask patterns.
2. Pick layer, offset, orientation and mask pattern where C = any(mask[o, i]) already
   agrees most with the code: one FFT correlation per layer covers every offset and
   orientation (``placement``), so the owner changes as few modules as possible.
3. Redraw the block: light module -> the whole kernel pruned; dark module -> at least
   ``min_entries`` unpruned entries (the kernel's largest rewind weights), so a later
   pruning or rounding attack must remove all of them to erase the module.
4. Balance the books: entries freed by light modules are given to connected kernels
   outside the block (largest rewind magnitude first); entries the dark modules consumed
   are taken from outside kernels that keep at least one entry (weakest trained weight
   first). C outside the block never changes and every layer keeps its exact count.
5. Retrain from the rewind point with the ticket's own recipe, mask enforced, so the code
   stays; report test accuracy before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.data import DataSplits, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.io.ticket import state_of
from ticketmark.ownership import keyed
from ticketmark.ownership.claims import Claim, make_claim
from ticketmark.ownership.keys import public_key_b64
from ticketmark.ownership.reference import bind
from ticketmark.ownership.signature import canonical, existing, hidden, placement, qr
from ticketmark.ownership.signature.floor import FLOOR_KEY, keep_floor, strengthen
from ticketmark.sparsity import Mask
from ticketmark.training import TrainConfig, evaluate, train

SCHEME = "signature"


@dataclass
class EmbedOptions:
    layer: str | None = None  # None: the best-fitting layer
    min_entries: int = 4  # unpruned entries per dark kernel (of kh*kw)
    # Dark kernels' entries are held at least at this quantile of the layer's unpruned
    # |w| during retraining (0 disables), so pruning and rounding attacks hit them last.
    floor_quantile: float = 0.5
    # Key-derived bits spread over every eligible layer (0: QR only); see ``hidden``.
    hidden_bits: int = hidden.DEFAULT_BITS
    epochs: int | None = None  # None: the ticket's own recipe
    data_dir: str | None = None
    progress: bool = True


@dataclass
class Plan:
    position: placement.Position
    code: qr.Code
    agreement: int
    candidates: list[dict[str, Any]] = field(default_factory=list)
    existing: list[dict[str, Any]] = field(default_factory=list)  # their layers were left alone


@dataclass
class EmbedResult:
    ticket: Ticket
    claim: Claim
    summary: dict[str, Any]
    reveal: bytes | None = None  # opens the hidden bits (keep it secret until a dispute)


def as_kernels(t: torch.Tensor) -> torch.Tensor:
    """A linear layer's (O, I) tensor as (O, I, 1, 1): each entry is one module, as in a 1x1
    convolution (a view; conv tensors unchanged)."""
    return t.view(*t.shape, 1, 1) if t.dim() == 2 else t


def layer_connectivity(mask: Mask) -> dict[str, torch.Tensor]:
    """C = any(mask[o, i]) for every conv and linear layer the mask covers."""
    return {n: as_kernels(m).flatten(2).any(dim=2) for n, m in mask.items()
            if m.dim() in (2, 4)}


def fitting_layers(mask: Mask, n: int, min_entries: int = 1) -> list[str]:
    """Layers with n x n channels and kernels of at least ``min_entries`` entries.

    A 1x1 convolution (a ResNet shortcut) or a linear layer is excluded by default: its
    dark modules would rest on a single weight, which one pruning step removes.
    """
    return [name for name, m in mask.items() if placement.fits(tuple(m.shape), n)
            and as_kernels(m).shape[2] * as_kernels(m).shape[3] >= min_entries]


def plan(mask: Mask, codes: list[qr.Code], layer: str | None = None,
         min_entries: int = 1) -> Plan:
    """The (layer, offset, orientation, mask pattern) with the most agreement."""
    n = codes[0].size
    fit = fitting_layers(mask, n, min_entries)
    if layer is not None:
        if layer not in mask:
            raise TicketmarkError(f"the ticket has no pruned layer {layer!r} "
                                  f"(layers that fit a {n}x{n} code: {', '.join(fit) or 'none'})")
        if layer not in fit:
            shape = tuple(mask[layer].shape)
            what = (f"has {shape[2]}x{shape[3]} kernels (a dark module needs "
                    f"{min_entries} entries)" if placement.fits(shape, n) else
                    f"{shape[:2] if len(shape) == 4 else shape} is too small for a {n}x{n} code")
            raise TicketmarkError(f"layer {layer} {what}; layers that fit: "
                                  f"{', '.join(fit) or 'none'}")
        fit = [layer]
    if not fit:
        raise TicketmarkError(f"no conv layer of this ticket has {n} input and output channels "
                              f"for a {n}x{n} QR code")
    conns = {k: v for k, v in layer_connectivity(mask).items() if k in fit}
    # A layer that already carries a code is left alone as a whole: drawing beside the code
    # would still move entries inside it to keep the layer's count, and erase it.
    found = existing.existing_codes(conns, codes[0].version)
    taken = {k for k, v in found.items() if bool(v.any())}
    if layer is not None and layer in taken:
        raise TicketmarkError(f"layer {layer} already carries a QR code "
                              f"({existing.describe({layer: found[layer]})}); drawing into it "
                              "would erase that code; choose another layer")
    conns = {k: v for k, v in conns.items() if k not in taken}
    if not conns:
        raise TicketmarkError("every layer a code fits already carries a QR code "
                              f"({existing.describe(found)}); nowhere is left to sign")
    candidates = placement.best_per_layer(conns, [c.modules for c in codes])
    best: Plan | None = None
    rows = []
    for cand in candidates:
        code = codes[cand.code]
        rows.append({"layer": cand.position.layer, "mask": code.mask,
                     "agreement": cand.agreement})
        if best is None or cand.agreement > best.agreement:
            best = Plan(cand.position, code, cand.agreement)
    assert best is not None
    best.candidates = sorted(rows, key=lambda r: -r["agreement"])[:10]
    best.existing = existing.describe(found)
    return best


@torch.no_grad()
def draw(mask: torch.Tensor, rewind: torch.Tensor, trained: torch.Tensor, drawn: np.ndarray,
         row: int, col: int, min_entries: int) -> tuple[torch.Tensor, dict[str, int]]:
    """A new layer mask with ``drawn`` (n x n, True = dark) in its connectivity at (row, col).

    Keeps the layer's exact count of unpruned entries and leaves C outside the block as it
    was. Everything is a tensor operation over the whole layer.
    """
    o, i = mask.shape[:2]
    n = drawn.shape[0]
    target = torch.full((o, i), -1, dtype=torch.int8)
    target[row:row + n, col:col + n] = torch.from_numpy(np.ascontiguousarray(drawn)).to(
        torch.int8)
    return draw_modules(mask, rewind, trained, target, min_entries)


@torch.no_grad()
def draw_modules(mask: torch.Tensor, rewind: torch.Tensor, trained: torch.Tensor,
                 target: torch.Tensor, min_entries: int,
                 frozen: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """A new layer mask whose connectivity matches ``target`` wherever it is not -1.

    ``target`` (O, I) int8: 1 = dark module (at least ``min_entries`` unpruned entries, the
    largest rewind weights switched on), 0 = light (kernel pruned), -1 = free. Entries freed
    or consumed are balanced in free kernels (not ``frozen`` either) without changing their
    connectivity where the kernels have room, so the layer keeps its exact count and C
    changes only where targeted; in layers of one-weight kernels (1x1) free kernels are
    connected or emptied instead.
    """
    m = mask.clone().bool()
    o, i, kh, kw = m.shape
    ks = kh * kw
    need_per = min(min_entries, ks)
    flat = m.view(o, i, ks)
    rew = rewind.detach().abs().reshape(o, i, ks).to(torch.float64)
    trn = trained.detach().abs().reshape(o, i, ks).to(torch.float64)
    count_before = int(m.sum())
    dark = target == 1
    light = target == 0
    removed = int(flat[light].sum())
    flat[light] = False
    # Dark kernels: switch on the largest rewind weights among their pruned entries.
    have = flat.sum(dim=2)
    need = (need_per - have).clamp(min=0) * dark
    score = torch.where(flat, torch.full_like(rew, -1.0), rew)
    rank = torch.argsort(torch.argsort(score, dim=2, descending=True), dim=2)
    flat |= rank < need.unsqueeze(2)
    added = int(need.sum())

    inside = target >= 0
    if frozen is not None:
        inside = inside | frozen
    conn = flat.any(dim=2)
    delta = removed - added
    moved_in = moved_out = 0
    if delta > 0:  # give freed entries to connected kernels outside the targets
        cand = (~flat) & (conn & ~inside).unsqueeze(2)
        if int(cand.sum()) < delta:
            # One-weight kernels (1x1 convs, a MobileNet's pointwise layers) have no room
            # inside connected kernels: connect free kernels outside the targets instead.
            cand = (~flat) & (~inside).unsqueeze(2)
        if int(cand.sum()) < delta:
            raise TicketmarkError("not enough room outside the code to keep the weight count")
        score = torch.where(cand, rew, torch.full_like(rew, -1.0)).flatten()
        idx = torch.topk(score, delta).indices
        flat.view(-1)[idx] = True
        moved_in = delta
    elif delta < 0:  # take entries from free kernels, each keeping its strongest entry
        strongest = torch.argmax(torch.where(flat, trn, torch.full_like(trn, -1.0)), dim=2)
        keep = torch.zeros_like(flat)
        keep.scatter_(2, strongest.unsqueeze(2), True)
        cand = flat & ~keep & (~inside).unsqueeze(2)
        if int(cand.sum()) < -delta:  # one-weight kernels: empty whole free kernels
            cand = flat & (~inside).unsqueeze(2)
        if int(cand.sum()) < -delta:
            raise TicketmarkError("not enough spare weights outside the code to keep the "
                                  "weight count; try another --layer or a smaller --min-entries")
        score = torch.where(cand, trn, torch.full_like(trn, float("inf"))).flatten()
        idx = torch.topk(score, -delta, largest=False).indices
        flat.view(-1)[idx] = False
        moved_out = -delta
    assert int(m.sum()) == count_before, "weight count changed"
    return m, {"entries_pruned_in_block": removed, "entries_added_in_block": added,
               "entries_added_outside": moved_in, "entries_removed_outside": moved_out}


def claim_params(plan_: Plan, mask: Mask, tag: str, source_fp: str,
                 min_entries: int) -> dict[str, Any]:
    conns = layer_connectivity(mask)
    return {
        "tag": tag,
        "tag_fingerprint": source_fp,
        "qr_version": plan_.code.version,
        "qr_mask": plan_.code.mask,
        "qr_error": qr.ERROR_LEVEL,
        "size": plan_.code.size,
        "layer": plan_.position.layer,
        "row": plan_.position.row,
        "col": plan_.position.col,
        "orientation": plan_.position.orientation,
        "density": float(conns[plan_.position.layer].float().mean()),
        "densities": {k: float(v.float().mean()) for k, v in conns.items()},
        "min_entries": min_entries,
    }


def embed_signature(ticket: Ticket, key: Ed25519PrivateKey, message: str,
                    options: EmbedOptions | None = None,
                    data: DataSplits | None = None) -> EmbedResult:
    """Embed, retrain and sign; returns the new ticket, its claim and a summary."""
    options = options or EmbedOptions()
    if not 0.0 <= options.floor_quantile < 1.0:
        raise TicketmarkError(f"floor quantile must be in [0, 1), got {options.floor_quantile}")
    if options.min_entries < 1:
        raise TicketmarkError(f"--min-entries must be at least 1, got {options.min_entries}")
    if ticket.rewind is None:
        raise TicketmarkError("the ticket has no rewind weights, so it cannot be retrained "
                              "after embedding")
    if "train" not in ticket.meta:
        raise TicketmarkError("the ticket records no training recipe (meta 'train')")
    source_fp = ticket.fingerprint()
    tag = qr.make_tag(public_key_b64(key), message, source_fp)
    p = plan(ticket.mask, qr.all_masks(tag), options.layer, options.min_entries)
    name = p.position.layer
    drawn = placement.oriented(p.code.modules, p.position.orientation)
    o, i = ticket.mask[name].shape[:2]
    goals = {name: torch.full((o, i), -1, dtype=torch.int8)}
    goals[name][p.position.row:p.position.row + p.code.size,
                p.position.col:p.position.col + p.code.size] = torch.from_numpy(
                    drawn.astype(np.int8))

    # The hidden bits: positions and values from a seed only the key can reveal.
    nonce = hidden.new_nonce()
    reveal = keyed.reveal(key, hidden.CONTEXT, nonce)
    seed = keyed.seed_of(reveal)
    layout: hidden.Layout | None = None
    if options.hidden_bits > 0:
        taken = {str(e["layer"]) for e in p.existing}  # another owner's code: left alone
        layers = tuple(x for x in hidden.eligible_layers(ticket.mask, options.min_entries)
                       if x[0] not in taken)
        if not layers:
            raise TicketmarkError("no conv layer can hold the hidden signature's bits")
        # A small network has fewer kernels than the default 1024 bits: use at most half
        # of those outside the block, and refuse below the count whose perfect reading
        # could still pass the 1e-30 threshold.
        room = sum(o * i for _, o, i in layers) - p.code.size ** 2
        bits = min(options.hidden_bits, room // 2)
        if bits < hidden.MIN_BITS:
            raise TicketmarkError(f"the ticket has {max(room, 0)} kernels for hidden bits, too "
                                  f"few for {hidden.MIN_BITS}; sign with the QR alone "
                                  "(--hidden-bits 0) or a larger network")
        layout = hidden.Layout(layers, bits,
                               (name, p.position.row, p.position.col, p.code.size))
        for lname, t in hidden.targets(hidden.draw_bits(seed, layout), layout).items():
            goals[lname] = torch.where(goals[lname] >= 0, goals[lname], t) \
                if lname in goals else t

    layers_new: dict[str, torch.Tensor] = {}
    moves: dict[str, int] = {}
    for lname, goal in goals.items():
        drawn, mv = draw_modules(as_kernels(ticket.mask[lname]),
                                 as_kernels(ticket.rewind[lname]),
                                 as_kernels(ticket.state[lname]), goal, options.min_entries)
        layers_new[lname] = drawn.view(ticket.mask[lname].shape)
        for k, v in mv.items():
            moves[k] = moves.get(k, 0) + v
    changed = {lname: int(((as_kernels(ticket.mask[lname]).flatten(2).any(2))
                           != as_kernels(m).flatten(2).any(2)).sum())
               for lname, m in layers_new.items()}
    new_mask = Mask({k: layers_new.get(k, v) for k, v in ticket.mask.items()})

    cfg = TrainConfig.from_dict(ticket.meta["train"])
    if options.epochs is not None:
        cfg.epochs = options.epochs
        cfg.milestones = []
    cfg.with_model_defaults(ticket.model_name)
    data = data or load_dataset(ticket.dataset, options.data_dir)
    acc_before, _ = evaluate(ticket.build(), data.test)
    model = Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                   ticket.image_size, ticket.state, new_mask, ticket.rewind).build("rewind")
    earlier = keep_floor(ticket, model)  # a code signed before keeps its floor too
    dark = {lname: goal == 1 for lname, goal in goals.items()}
    raised = sum(strengthen(model, lname, d, options.floor_quantile) for lname, d in dark.items())

    def hold(epoch: int, m: torch.nn.Module, row: dict[str, Any]) -> bool:
        nonlocal raised
        if earlier is not None:
            earlier(epoch, m, row)
        raised += sum(strengthen(m, lname, d, options.floor_quantile)
                      for lname, d in dark.items())
        return False

    result = train(model, data, cfg, new_mask, progress=options.progress,
                   desc=f"retrain with signature in {name}", callback=hold)
    acc_after, _ = evaluate(model, data.test)

    params = claim_params(p, new_mask, tag, source_fp, options.min_entries)
    if layout is not None:
        params["hidden"] = {"nonce": nonce, "commitment": keyed.commitment(seed),
                            "layout": layout.to_json()}
    shape = (ticket.in_channels, ticket.image_size, ticket.image_size)
    params["canonical"] = {"model": ticket.model_name, "num_classes": ticket.num_classes,
                           "input_shape": list(shape),
                           "features": canonical.to_json(canonical.mask_features(
                               layer_connectivity(new_mask),
                               canonical.layer_axes(model.cpu())))}
    summary = {
        "tag": tag, "layer": name, "row": p.position.row, "col": p.position.col,
        "orientation": p.position.orientation, "qr_version": p.code.version,
        "qr_mask": p.code.mask, "modules": p.code.size ** 2,
        "modules_changed": p.code.size ** 2 - p.agreement, **moves,
        "hidden_bits": layout.bits if layout is not None else 0,
        "hidden_layers": len(layout.layers) if layout is not None else 0,
        "kernels_changed": sum(changed.values()),
        "acc_before": acc_before, "acc_after": acc_after,
        "acc_change": acc_after - acc_before, "retrain_epochs": cfg.epochs,
        "floor_quantile": options.floor_quantile, "entries_raised": raised,
        "existing_codes": p.existing,
    }
    history = list(ticket.meta.get("history", []))
    history.append({"kind": SCHEME, "params": {k: v for k, v in params.items()
                                               if k not in ("densities", "hidden",
                                                            "canonical")},
                    "acc_before": acc_before, "acc_after": acc_after})
    meta = {**ticket.meta, "metrics": result.metrics, "history": history,
            FLOOR_KEY: {"quantile": options.floor_quantile, "min_entries": options.min_entries}}
    new = Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                 ticket.image_size, state_of(model), new_mask, ticket.rewind, meta)
    # The claim binds the signed ticket's trained weights too (``ownership.reference``).
    claim = make_claim(key, SCHEME, new.fingerprint(), bind(params, new), message)
    return EmbedResult(new, claim, summary, reveal if layout is not None else None)
