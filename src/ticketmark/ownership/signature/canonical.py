"""Undo a channel permutation without the owner's reference ticket, from the mask alone.

Permuting channels is free for a thief and scrambles every position the signature uses.
``--reference`` re-aligns the suspect to the owner's ticket, but a verifier may not have
it. The claim therefore carries, for every permutable channel group
(``attacks.permute.channel_groups``: the residual streams and each block's inner
channels), a small fingerprint of each channel computed from the signed mask's channel
connectivity: its degree in every layer it touches, and the summed total degree of the
channels it connects to there (one round of colour refinement, kept as numbers rather than
hashed, so small mask edits move a fingerprint a little instead of scrambling it). The
verifier computes the same fingerprints from the connectivity it recovers from the
suspect's weights (canonical norms: rescaling cannot change them) and matches channels
group by group with the Hungarian algorithm.

Why the mask and not what the channels compute: the owner's later steps (``trigger embed``
retrains from the rewind point) keep the mask but change every activation, so an order
taken from activations at signing time no longer fits the release (measured: a permuted
copy of the README's release read NOT OWNED that way). Channels that stay tied (e.g. dead
ones) are structurally alike, so swapping them barely changes what is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torch import nn

from ticketmark.attacks.permute import channel_groups
from ticketmark.ownership.signature.extract import assignment

Axes = tuple[str | None, str | None]


def layer_axes(model: nn.Module) -> dict[str, Axes]:
    """conv weight name -> (label of its output-channel group, of its input-channel group)."""
    out: dict[str, list[str | None]] = {}
    for g in channel_groups(model):
        for m in g.members:
            if m.key.endswith("weight") and m.dim in (0, 1) and m.block == 1:
                out.setdefault(m.key, [None, None])[m.dim] = g.label
    return {k: (v[0], v[1]) for k, v in out.items()}


def mask_features(conns: Mapping[str, torch.Tensor], axes: Mapping[str, Axes]
                  ) -> dict[str, np.ndarray]:
    """group label -> (channels, features) fingerprints (module docstring)."""
    layers = sorted(n for n in conns if n in axes)
    mats = {n: conns[n].numpy().astype(np.float64) for n in layers}
    feats: dict[str, list[np.ndarray]] = {}
    for n in layers:
        row, col = axes[n]
        if row is not None:
            feats.setdefault(row, []).append(mats[n].sum(1))
        if col is not None:
            feats.setdefault(col, []).append(mats[n].sum(0))
    total = {g: np.sum(v, axis=0) for g, v in feats.items()}
    for n in layers:
        row, col = axes[n]
        m = mats[n]
        col_tot = total.get(col, np.ones(m.shape[1])) if col is not None else np.ones(m.shape[1])
        row_tot = total.get(row, np.ones(m.shape[0])) if row is not None else np.ones(m.shape[0])
        if row is not None and len(col_tot) == m.shape[1]:
            feats[row].append(m @ col_tot)
        if col is not None and len(row_tot) == m.shape[0]:
            feats[col].append(m.T @ row_tot)
    return {g: np.stack(v, 1) for g, v in feats.items() if len({len(x) for x in v}) == 1}


def to_json(features: Mapping[str, np.ndarray]) -> dict[str, list[list[int]]]:
    return {g: np.rint(f).astype(np.int64).tolist() for g, f in features.items()}


def from_json(obj: Any) -> dict[str, np.ndarray] | None:
    """A claim's fingerprints, or None when malformed (a hostile claim reads as absent)."""
    if not isinstance(obj, dict):
        return None
    out = {}
    try:
        for g, rows in obj.items():
            arr = np.asarray(rows, dtype=np.float64)
            if arr.ndim != 2 or not np.isfinite(arr).all() or arr.shape[0] > 1 << 16:
                return None
            out[str(g)] = arr
    except (TypeError, ValueError, OverflowError):
        return None
    return out


def match(claim: Mapping[str, np.ndarray], suspect: Mapping[str, np.ndarray]
          ) -> dict[str, np.ndarray]:
    """group label -> perm with suspect channel perm[j] playing the claim's channel j."""
    out = {}
    for g, a in claim.items():
        b = suspect.get(g)
        if b is not None and a.shape == b.shape:
            out[g] = assignment(cdist(a, b, metric="cityblock"))
    return out


def realign(conn: torch.Tensor, axes: Axes, perms: Mapping[str, np.ndarray]
            ) -> torch.Tensor | None:
    """The suspect layer's connectivity in the release's channel order (None if unknown)."""
    idx = []
    for dim, label in enumerate(axes):
        size = conn.shape[dim]
        if label is None:
            idx.append(torch.arange(size))
            continue
        perm = perms.get(label)
        if perm is None or len(perm) != size:
            return None
        idx.append(torch.from_numpy(perm))
    return conn[idx[0]][:, idx[1]]
