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
    """A conv weight (O, I, kh, kw), or a linear one (O, I) whose entries are its modules,
    with at least n outputs and n inputs."""
    return len(shape) in (2, 4) and shape[0] >= n and shape[1] >= n


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

    Every offset, all four orientations and every code (the embedder offers the 8 mask
    patterns) are covered by FFT correlations; the Python loop runs over layers and codes
    only. Sorted by agreement, best first; ties keep layer order, and within a layer the
    first best position in (orientation, row, col) order wins, as ``argmax`` of
    :func:`agreement_maps` would pick.

    Why it is cheaper than :func:`agreement_maps` (float64, four inverse FFTs and box
    sums): correlating with the +-1 code ``2D - 1`` gives ``2 <C, D> - sum(C)`` directly,
    so the agreement is that correlation plus the constant ``n^2 - sum(D)`` and no box sums
    are needed; for version 1 codes two orientations share one inverse FFT
    (:func:`_packing_base`, :func:`_best_position`); the
    layer's spectrum is computed once, in float32, and the codes' spectra once per layer
    shape. Every float32 value is checked to round exactly before it is trusted.
    """
    from ticketmark.ownership.signature import heap

    heap.retain_freed_memory()  # FFT workspace reused, not re-faulted
    n = codes[0].shape[0]
    drawn = torch.cat([oriented_stack(c) for c in codes])
    # flipped, so that the FFT's convolution is a correlation with the code as drawn
    signed = torch.flip(2 * drawn.to(torch.float32) - 1, dims=(1, 2))
    base = _packing_base(n)
    if base is not None:  # orientations (0, 1) and (2, 3) of each code share a transform
        signed = signed[0::2] + base * signed[1::2]
    per_code = len(signed) // len(codes)  # inverse FFTs per code
    const = [n * n - int(c.sum()) for c in codes]  # the same in all four orientations
    spectra: dict[tuple[int, int], torch.Tensor] = {}
    spaces: dict[tuple[int, int], _Workspace] = {}
    out = []
    for name, conn in conns.items():
        if conn.shape[0] < n or conn.shape[1] < n:
            continue
        h, w = conn.shape
        if (h, w) not in spectra:
            spectra[(h, w)] = torch.fft.rfft2(signed, s=(h, w))
            spaces[(h, w)] = _Workspace((h, w), n, per_code)
        # a bool image seen as uint8 converts several times faster than through ``to``
        pixels = conn.view(torch.uint8) if conn.dtype == torch.bool else conn
        image = torch.fft.rfft2(pixels.to(torch.float32))
        for j in range(len(codes)):
            found = _best_position(spectra[(h, w)][per_code * j : per_code * (j + 1)],
                                   image, spaces[(h, w)], base)
            if found is None:  # float32 was not exact enough: the float64 maps decide
                maps = agreement_maps(conn, drawn[ORIENTATIONS * j : ORIENTATIONS * (j + 1)])
                flat = int(torch.argmax(maps))
                found = (flat, int(maps.view(-1)[flat]) - const[j])
            flat, value = found
            rows, cols = h - n + 1, w - n + 1
            k, rest = divmod(flat, rows * cols)
            r, c = divmod(rest, cols)
            out.append(Candidate(Position(name, r, c, k), value + const[j],
                                 ORIENTATIONS * rows * cols, j))
    return sorted(out, key=lambda cand: -cand.agreement)


# Rounding to the nearest integer is exact while every value lies this close to it (0.5
# would do; the margin is deliberate). On ResNet-18's 512 x 512 layers the packed float32
# maps of a version-1 code stay below 0.016.
_ROUNDING_SLACK = 0.25

# Packed values must stay where float32's spacing (2^-4 below 2^20) is far below the
# slack; otherwise the rounding check could not see an error.
_PACKED_LIMIT = 2.0**20


def _packing_base(n: int) -> float | None:
    """A power of two above twice the largest |correlation| (n^2) of an n x n +-1 code,
    or None when packing two correlations into one float32 would not stay exact.

    ``low + base * high`` then determines both integers: ``high = rint(z / base)`` and
    ``low = z - base * high``; a power of two keeps the scaling exact. Version 1 codes
    (n = 21, the tags ticketmark draws) pack with base 1024 below 4.6e5; from n = 25 on the
    orientations get one inverse FFT each.
    """
    base = float(2 ** (2 * n * n).bit_length())
    return base if n * n * (1 + base) < _PACKED_LIMIT else None


class _Workspace:
    """Buffers for :func:`_best_position`, one set per layer shape, reused by every layer
    and code of that shape: fresh megabyte-sized arrays on every call cost as much in page
    faults as the arithmetic done in them."""

    def __init__(self, shape: tuple[int, int], n: int, transforms: int):
        h, w = shape
        self.shape, self.n = shape, n
        self.product = torch.empty(h, w // 2 + 1, dtype=torch.complex64)
        self.full = torch.empty(h, w)
        rows, cols = h - n + 1, w - n + 1
        self.maps = [(np.empty((rows, cols), np.float32), np.empty((rows, cols), np.float32))
                     for _ in range(transforms)]


def _best_position(spectra: torch.Tensor, image: torch.Tensor, space: _Workspace,
                   base: float | None) -> tuple[int, int] | None:
    """First best position of one code over its four orientations, and its correlation.

    ``spectra``: the spectra of the code's flipped +-1 kernels, one per orientation, or
    (``base`` given) packed in pairs, ``orientation 2p + base * orientation 2p+1``, so that
    one inverse FFT gives ``z = low + base * high``, the correlations of two orientations
    at once (half the inverse FFTs, the costliest step). ``image``: the layer's spectrum.
    Each map, 1 MiB on a 512 x 512 layer, is checked and reduced while it is in cache.

    Returns ``(flat index in (orientation, row, col) order, correlation)``: the position
    ``argmax`` of the exact integer maps returns. None if any value strays more than
    :data:`_ROUNDING_SLACK` from its integer: only while none does is rounding exact.
    """
    n = space.n
    keys: list[np.ndarray] = []  # per orientation: a map whose values order like its own
    tops: list[float] = []  # per orientation: its largest correlation
    cuts: list[float] = []  # per orientation: key > cut exactly where the top is reached
    for spectrum, (z, scratch) in zip(spectra, space.maps, strict=True):
        torch.mul(spectrum, image, out=space.product)
        torch.fft.irfft2(space.product, s=space.shape, out=space.full)
        values = space.full.numpy()[n - 1 :, n - 1 :]
        np.rint(values, out=z)
        np.subtract(values, z, out=scratch)
        if float(np.abs(scratch, out=scratch).max()) > _ROUNDING_SLACK:
            return None
        if base is None:
            top = float(z.max())
            keys.append(z)
            tops.append(top)
            cuts.append(top - 0.5)
            continue
        # z = low + base * high with |low| <= n^2 < base / 2: z orders like ``high``
        # (ties broken by ``low``), so the top of ``high`` is rint(max z / base).
        high = float(np.rint(float(z.max()) / base))
        np.multiply(z, 1 / base, out=scratch)
        np.rint(scratch, out=scratch)
        np.multiply(scratch, base, out=scratch)
        low = np.subtract(z, scratch, out=scratch)
        top_low = float(low.max())
        keys += [low, z]
        tops += [top_low, high]
        cuts += [top_low - 0.5, base * high - base / 2]
    best = max(tops)
    k = tops.index(best)  # the first orientation that reaches it
    # numpy's argmax of a bool array stops at the first True
    return k * keys[k].size + int(np.argmax(keys[k] > cuts[k])), int(best)


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
