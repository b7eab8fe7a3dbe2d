"""Recover a layer's channel connectivity from weights alone, and undo channel permutations.

A suspect's mask is the thief's to forge, so connectivity comes from the weights: kernel
L1 norms, keeping the strongest ``density`` fraction of kernels (the density the owner
recorded when signing). Thresholding at a known density rather than at "non-zero" means
tiny noise written into pruned positions cannot turn every kernel on.

Raw norms are not enough against a thief who knows the network's symmetries. Scaling an
output channel by s and dividing the BatchNorm (or the next layer's column) by s leaves
the function unchanged but multiplies a whole row of norms by s; with a tiny entry put into
every empty kernel of that row first, a global threshold then turns the whole row on.
``canonical_norms`` removes every such scaling: it divides each row and each column by its
*size-weighted mean* (sum n^2 / sum n, dominated by the strong kernels, so tiny fills
barely move it) and alternates until the scales stop changing. The fixed point is the same
for ``N`` and for ``D1 N D2`` with any positive diagonal D1, D2, which covers BatchNorm
folding, the next layer's compensation and any per-channel affine, without knowing which
layer feeds which.

Permuting channels preserves the function but scrambles C's rows and columns. Given the
owner's reference ticket, the suspect's channels are matched back with the Hungarian
algorithm on features that do not depend on the order of the other axis (the sorted kernel
norms of a row or column), then refined by alternating the two axes with the partner axis
already aligned, which makes the features positional and far more discriminative.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from ticketmark.errors import TicketmarkError


def raw_kernel_norms(weight: torch.Tensor) -> torch.Tensor:
    """(O, I) L1 norm of each kernel of a conv weight (O, I, kh, kw)."""
    if weight.dim() != 4:
        raise TicketmarkError(f"expected a conv weight (O, I, kh, kw), got shape "
                              f"{tuple(weight.shape)}")
    norms = weight.detach().abs().to(torch.float64).sum(dim=(2, 3))
    # NaN/inf written by a thief must not poison the selection: they carry no evidence.
    return torch.nan_to_num(norms, nan=0.0, posinf=0.0, neginf=0.0)


def _divide_by_size(norms: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    s1 = norms.sum(dim, keepdim=True)
    s2 = (norms * norms).sum(dim, keepdim=True)
    scale = torch.where(s1 > 0, s2 / s1.clamp_min(1e-300), torch.ones_like(s1))
    return norms / scale, scale


def canonical_norms(norms: torch.Tensor, max_rounds: int = 200, tol: float = 1e-10
                    ) -> torch.Tensor:
    """Kernel norms with every row and column scaling removed (see the module docstring).

    Starts by dividing rows and columns by their maxima (so scales of 1e-6..1e6 do not cost
    hundreds of rounds), then alternates size-weighted-mean normalisation of rows and
    columns until no scale moves by more than ``tol`` (relative).
    """
    n = norms.to(torch.float64)
    for dim in (1, 0):
        top = n.amax(dim, keepdim=True)
        n = n / torch.where(top > 0, top, torch.ones_like(top))
    for _ in range(max_rounds):
        n, rs = _divide_by_size(n, 1)
        n, cs = _divide_by_size(n, 0)
        if float((rs - 1).abs().max()) < tol and float((cs - 1).abs().max()) < tol:
            break
    return n / max(float(n.max()), 1e-300)


def kernel_norms(weight: torch.Tensor) -> torch.Tensor:
    """(O, I) canonical kernel norms: invariant to per-channel rescaling of rows/columns."""
    return canonical_norms(raw_kernel_norms(weight))


def connectivity_from_norms(norms: torch.Tensor, density: float) -> torch.Tensor:
    """Top ``density`` fraction of kernels by norm (never a zero kernel): (O, I) bool."""
    if not 0.0 <= density <= 1.0:
        raise TicketmarkError(f"connectivity density must be in [0, 1], got {density}")
    flat = norms.flatten()
    k = int(round(density * flat.numel()))
    if k <= 0:
        return torch.zeros_like(norms, dtype=torch.bool)
    # k-th largest = (numel - k + 1)-th smallest; kthvalue is a linear-time selection.
    threshold = torch.kthvalue(flat, flat.numel() - k + 1).values
    return (norms >= threshold) & (norms > 0)


def connectivity(weight: torch.Tensor, density: float) -> torch.Tensor:
    return connectivity_from_norms(kernel_norms(weight), density)


def assignment(cost: np.ndarray) -> np.ndarray:
    """perm with perm[j] = the suspect index matched to reference j (min-cost matching of
    ``cost[reference, suspect]``)."""
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def _match(suspect: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """perm with suspect[perm[j]] ~ reference[j] (rows are feature vectors)."""
    return assignment(cdist(reference, suspect, metric="cityblock"))


Block = tuple[int, int, int]  # (row, col, side) of a claimed code, in the reference's frame


def align(suspect_norms: torch.Tensor, reference_norms: torch.Tensor,
          rounds: int = 3, block: Block | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Output and input permutations that map the suspect's channels onto the reference's.

    ``suspect[perm_out][:, perm_in]`` lines up with ``reference``. Starts from
    permutation-invariant features (each row's and column's sorted norms), then refines
    each axis with the other already aligned.

    ``block``: the claimed code's square in the reference. The refinement then matches
    rows on the columns outside it and columns on the rows outside it, so the claimed
    pattern does not steer it (the starting point's sorted norms see how strong a row's
    kernels are, not where they sit). Matched on the block, the alignment picks whichever
    suspect channels look most like the code and manufactures agreement: the owner's code
    read in the owner's own pre-embedding ticket rose from 126 to 155 of 208 data modules
    (p 1 -> 8e-8) and in an independently trained ticket from 115 to 136.
    """
    s = suspect_norms.numpy()
    r = reference_norms.numpy()
    if s.shape != r.shape:
        raise TicketmarkError(f"suspect layer has shape {s.shape}, the reference {r.shape}")
    rows, cols = np.arange(r.shape[0]), np.arange(r.shape[1])
    if block is not None:
        top, left, side = block
        rows = rows[(rows < top) | (rows >= top + side)]
        cols = cols[(cols < left) | (cols >= left + side)]
    perm_out = _match(-np.sort(-s, axis=1), -np.sort(-r, axis=1))
    perm_in = _match(-np.sort(-s, axis=0).T, -np.sort(-r, axis=0).T)
    for _ in range(rounds):
        perm_in = _match(s[perm_out][rows].T, r[rows].T)
        previous, perm_out = perm_out, _match(s[:, perm_in][:, cols], r[:, cols])
        # A round depends only on the ``perm_out`` it starts from: one that returns it
        # unchanged is a fixed point, and the remaining rounds would return the same pair.
        if np.array_equal(perm_out, previous):
            break
    return perm_out, perm_in


def aligned_norms(suspect_weight: torch.Tensor, reference_weight: torch.Tensor,
                  block: Block | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """The suspect's kernel norms with channels re-ordered to the reference's.

    Also returns how many channels were moved (0 means the suspect was not permuted).
    """
    s = kernel_norms(suspect_weight)
    r = kernel_norms(reference_weight)
    perm_out, perm_in = align(s, r, block=block)
    moved = {"output_channels_moved": int((perm_out != np.arange(len(perm_out))).sum()),
             "input_channels_moved": int((perm_in != np.arange(len(perm_in))).sum())}
    idx_out = torch.from_numpy(perm_out)
    idx_in = torch.from_numpy(perm_in)
    return s[idx_out][:, idx_in], moved
