"""Channel alignment through the network's wiring, for ``derive``.

``derive`` first aligned each layer on its own, from kernel magnitudes. A thief who prunes
half the weights at random *and* permutes the channels scrambles the magnitudes enough that
the per-layer matching fails and the copy reads as not derived (measured: p = 0.54 on a
laundered copy). The network's wiring gives far more to match on: a channel group (a
residual stream, a block's inner channels) indexes the rows of the layers that write it and
the columns of the layers that read it, and the first layer's input and the classifier's
output are never permuted. So groups are matched jointly ("weight matching", Ainsworth et
al., Git Re-Basin, ICLR 2023): the cost of pairing reference channel j with suspect channel
q is the summed inner product of their slices in every member layer, the other axis already
aligned; Hungarian per group, swept until nothing moves.

Slices are built from kernels scaled to unit length, so a positive rescaling of any channel
(which BatchNorm or the next layer undoes) changes nothing, and random pruning of half the
entries leaves a kernel's cosine with its original near 0.7, far above an unrelated
kernel's.

**Leave one layer out.** The alignment a layer is *scored* with must not have been fitted
on that layer, or an unrelated model would look derived there (the matching optimises the
very inner products the statistic measures). ``aligned_without`` re-matches a layer's two
groups from the other members only (the layers before and after it, the rest of the
stream), starting from the joint solution. The null in ``derive`` then stays what it was:
convergent features make unrelated models' alignments a little better than random, which
the median-layer combination and the calibration against independently trained models
(``benchmarks/eval_derive.py``) absorb.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ticketmark.errors import TicketmarkError

SWEEPS = 8


@dataclass
class Wiring:
    """For each prunable weight: the group labels of its output and input axes (None =
    fixed), and each group's size."""

    axes: dict[str, tuple[str | None, str | None]]
    sizes: dict[str, int]


def wiring_of(model: torch.nn.Module) -> Wiring:
    """Traced channel groups of ``model`` (``attacks.permute.channel_groups``)."""
    from ticketmark.attacks.permute import channel_groups

    axes: dict[str, list[str | None]] = {}
    sizes: dict[str, int] = {}
    for g in channel_groups(model):
        for m in g.members:
            if m.key.endswith("weight") and m.dim in (0, 1) and m.block == 1:
                axes.setdefault(m.key, [None, None])[m.dim] = g.label
                sizes[g.label] = g.size
    return Wiring({k: (v[0], v[1]) for k, v in axes.items()}, sizes)


def unit_kernels(w: torch.Tensor) -> np.ndarray:
    """(O, I, K) with every kernel scaled to unit length (zero kernels stay zero); for a
    linear / 1x1 layer, rows and columns alternately scaled to unit length first, so that
    one-weight kernels keep their relative size but no channel's scale."""
    a = w.detach().to(torch.float64).numpy()
    if a.ndim == 4 and a.shape[2] * a.shape[3] > 1:
        k = a.reshape(a.shape[0], a.shape[1], -1)
        n = np.linalg.norm(k, axis=2, keepdims=True)
        return np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    m = a.reshape(a.shape[0], a.shape[1])
    for _ in range(30):
        for axis in (1, 0):
            n = np.linalg.norm(m, axis=axis, keepdims=True)
            m = np.divide(m, n, out=np.zeros_like(m), where=n > 0)
    return m[:, :, None]


def _assign(gain: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(-gain)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return out


class Matcher:
    """Weight matching of a suspect onto a reference over one wiring."""

    def __init__(self, suspect: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                 wiring: Wiring) -> None:
        keys = [k for k, (o, i) in wiring.axes.items()
                if k in suspect and k in reference
                and tuple(suspect[k].shape) == tuple(reference[k].shape)
                and suspect[k].dim() in (2, 4)]
        self.r = {k: unit_kernels(reference[k]) for k in keys}
        self.s = {k: unit_kernels(suspect[k]) for k in keys}
        self.axes = {k: wiring.axes[k] for k in keys}
        self.groups = [g for g in wiring.sizes
                       if any(g in ax for ax in self.axes.values())]
        self.sizes = wiring.sizes
        self.perms = {g: np.arange(wiring.sizes[g]) for g in self.groups}

    def _gain(self, group: str, skip: str | None = None) -> np.ndarray:
        gain = np.zeros((self.sizes[group], self.sizes[group]))
        for k, (out_g, in_g) in self.axes.items():
            if k == skip:
                continue
            r, s = self.r[k], self.s[k]
            if out_g == group:
                b = s[:, self.perms[in_g]] if in_g is not None else s
                gain += np.einsum("jik,qik->jq", r, b)
            if in_g == group:
                b = s[self.perms[out_g]] if out_g is not None else s
                gain += np.einsum("oik,oqk->iq", r, b)
        return gain

    def run(self, sweeps: int = SWEEPS) -> dict[str, np.ndarray]:
        for _ in range(sweeps):
            moved = False
            for g in self.groups:
                new = _assign(self._gain(g))
                moved |= not np.array_equal(new, self.perms[g])
                self.perms[g] = new
            if not moved:
                break
        return self.perms

    def aligned_without(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(perm_out, perm_in) of layer ``key`` matched on every member but ``key``."""
        out_g, in_g = self.axes[key]
        o, i = self.r[key].shape[:2]
        po = _assign(self._gain(out_g, skip=key)) if out_g is not None else np.arange(o)
        pi = _assign(self._gain(in_g, skip=key)) if in_g is not None else np.arange(i)
        return po, pi


def wiring_alignments(suspect: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                      wiring: Wiring | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Leave-one-layer-out alignments of every wired layer (empty without a wiring)."""
    if wiring is None:
        return {}
    m = Matcher(suspect, reference, wiring)
    m.run()
    return {k: m.aligned_without(k) for k in m.axes}


def reference_wiring(model_name: str, in_channels: int, num_classes: int,
                     image_size: int) -> Wiring | None:
    """The wiring of a reference ticket's architecture, or None when it cannot be traced."""
    from ticketmark.models import build_model

    try:
        model = build_model(model_name, in_channels, num_classes, image_size)
        return wiring_of(model)
    except (TicketmarkError, RuntimeError, TypeError, ValueError, KeyError):
        return None
