"""Where a code sits in a layer's channel connectivity, and how well it agrees there.

For a binary connectivity image C (O x I) and a code D (n x n, 1 = dark), the agreement of
the block at offset (r, c) is ``#{C == D} = 2 <C_block, D> - sum(C_block) - sum(D) + n^2``.
Both the cross-correlation ``<C_block, D>`` and the box sum ``sum(C_block)`` are computed
for *every* offset and every orientation at once with FFTs, so the search over a ResNet-18
costs a few FFTs per layer instead of a Python loop over millions of windows.

Orientation k means the code was rotated by ``k`` quarter turns (``numpy.rot90``) before
it was drawn; :func:`oriented` and :func:`unorient` convert between the two frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

ORIENTATIONS = 4


@dataclass(frozen=True)
class Position:
    """Where a code is drawn: layer name, top-left (row = output, col = input), rotation."""

    layer: str
    row: int
    col: int
    orientation: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def oriented(code: np.ndarray, orientation: int) -> np.ndarray:
    """The code as drawn into the layer."""
    return np.rot90(code, orientation).copy()


def unorient(block: np.ndarray, orientation: int) -> np.ndarray:
    """A block cut from the layer, turned back into the code's own frame."""
    return np.rot90(block, -orientation).copy()


def fits(shape: tuple[int, ...], n: int) -> bool:
    """A conv weight (O, I, kh, kw) with at least n output and n input channels."""
    return len(shape) == 4 and shape[0] >= n and shape[1] >= n


def _correlate(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation of one 2-D image with K kernels via real FFTs: (K, H', W')."""
    h, w = image.shape
    _, n, m = kernels.shape
    fi = torch.fft.rfft2(image, s=(h, w))
    # correlation = convolution with the flipped kernel; the valid part starts at n-1.
    fk = torch.fft.rfft2(torch.flip(kernels, dims=(1, 2)), s=(h, w))
    full = torch.fft.irfft2(fi.unsqueeze(0) * fk, s=(h, w))
    return full[:, n - 1:, m - 1:]


def box_sums(image: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of every n x n window (valid positions) from an integral image."""
    ii = torch.zeros(image.shape[0] + 1, image.shape[1] + 1, dtype=image.dtype)
    ii[1:, 1:] = image.cumsum(0).cumsum(1)
    return ii[n:, n:] - ii[:-n, n:] - ii[n:, :-n] + ii[:-n, :-n]


def agreement_maps(conn: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Agreement counts of each code with every block of ``conn``.

    ``conn``: (O, I) bool; ``codes``: (K, n, n) bool, already oriented. Returns int64
    (K, O - n + 1, I - n + 1). Exact: the FFT runs in float64 and is rounded.
    """
    c = conn.to(torch.float64)
    d = codes.to(torch.float64)
    n = d.shape[-1]
    cross = _correlate(c, d)
    box = box_sums(c, n)
    dark = d.sum(dim=(1, 2)).view(-1, 1, 1)
    agree = 2 * cross - box - dark + n * n
    return torch.round(agree).to(torch.int64)


def masked_agreement_maps(conn: torch.Tensor, codes: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
    """Like :func:`agreement_maps`, counting only modules where ``weights`` (K, n, n) is 1.

    ``#{C == D on W} = 2 <C, W D> - <C, W> - sum(W D) + sum(W)``: two correlations.
    """
    c = conn.to(torch.float64)
    d = codes.to(torch.float64)
    w = weights.to(torch.float64)
    both = _correlate(c, torch.cat([w * d, w]))
    k = d.shape[0]
    agree = (2 * both[:k] - both[k:] - (w * d).sum(dim=(1, 2)).view(-1, 1, 1)
             + w.sum(dim=(1, 2)).view(-1, 1, 1))
    return torch.round(agree).to(torch.int64)


def oriented_stack(code: np.ndarray) -> torch.Tensor:
    """The code in all orientations, (4, n, n) bool."""
    return torch.from_numpy(np.stack([oriented(code, k) for k in range(ORIENTATIONS)]))


@dataclass(frozen=True)
class Candidate:
    position: Position
    agreement: int
    positions_in_layer: int  # offsets x orientations searched in that layer
    code: int = 0  # index into the codes searched


def best_per_layer(conns: Mapping[str, torch.Tensor],
                   codes: Sequence[np.ndarray]) -> list[Candidate]:
    """For every layer and code, the block and orientation that agree most.

    One batched FFT correlation per layer covers every offset, all four orientations and
    every code (the embedder offers the 8 mask patterns); the Python loop runs over layers
    only. Sorted by agreement, best first.
    """
    n = codes[0].shape[0]
    stack = torch.cat([oriented_stack(c) for c in codes])
    out = []
    for name, conn in conns.items():
        if conn.shape[0] < n or conn.shape[1] < n:
            continue
        maps = agreement_maps(conn, stack)
        per_code = maps.view(len(codes), -1)
        best = torch.argmax(per_code, dim=1).tolist()
        for j, flat in enumerate(best):
            k, rest = divmod(flat, maps.shape[1] * maps.shape[2])
            r, c = divmod(rest, maps.shape[2])
            out.append(Candidate(Position(name, r, c, k), int(per_code[j, flat]),
                                 per_code.shape[1], j))
    return sorted(out, key=lambda cand: -cand.agreement)


def top_offsets(conn: torch.Tensor, code: np.ndarray, count: int) -> list[Candidate]:
    """The ``count`` best (offset, orientation) pairs of one layer (for decoding attempts)."""
    maps = agreement_maps(conn, oriented_stack(code))
    vals, idx = torch.topk(maps.flatten(), min(count, maps.numel()))
    per = maps.shape[1] * maps.shape[2]
    out = []
    for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
        k, rest = divmod(i, per)
        r, c = divmod(rest, maps.shape[2])
        out.append(Candidate(Position("", r, c, k), int(v), maps.numel()))
    return out


def block(conn: torch.Tensor | np.ndarray, position: Position, n: int) -> np.ndarray:
    """The n x n block at ``position``, turned back into the code's frame (bool)."""
    arr = conn.numpy() if isinstance(conn, torch.Tensor) else conn
    cut = np.asarray(arr[position.row:position.row + n, position.col:position.col + n],
                     dtype=bool)
    return unorient(cut, position.orientation)
