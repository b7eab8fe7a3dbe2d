"""Read a QR block out of a channel-permuted suspect with the verifier's own search.

A thief may permute a layer's output and input channels (with the rest of the network, so
the function is unchanged); the claimed block's rows and columns then sit anywhere in the
layer. Frames supplied by the claimant (a reference ticket, channel fingerprints) could undo
that, but a forger builds them after seeing the suspect (``verify.Alternatives``), so the
verifier finds the frame itself, from the suspect and the claimed code alone:

* **search**: which 21 suspect rows and 21 columns, in which order, reproduce the code best.
  Softassign (Gold & Rangarajan's graduated assignment) from a uniform start, then
  alternating Hungarian matchings of rows given columns and columns given rows; the claimed
  position as it is is a second start. The objective counts every module; the statistic
  counts data modules only, as ``search_null`` does (function patterns are the same in every
  code of a version).
* **null**: the same search, with the same starts, for random codes nobody embedded. The
  freedom it grants (any rows and columns in any order) is large: on a 64x64 layer at 67%
  connectivity the best frames of random codes agree on 168-180 of 208 data modules, while
  the owner's permuted code agrees on ~200. The verdict's p is the Gumbel tail of those
  maxima (``search_null.SearchNull``) times 16: the claimant picked one of the code's eight
  mask patterns and one of two transposition classes (row and column reversal are
  themselves permutations).

So the p-value here is honest about the freedom and therefore much weaker than a reading at
a fixed position: it can pass 1e-9 only when the code survives nearly intact in a layer
that is not too dense. ``ticketmark verify`` uses it only when the suspect's own frame
fails.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ticketmark.ownership.signature import qr
from ticketmark.ownership.signature.search_null import CODES, SearchNull, random_tags

BETAS = np.geomspace(0.05, 20.0, 24)  # softassign's annealing schedule
SINKHORN_ROUNDS = 8
REFINE_ROUNDS = 30
CHOICES = 16  # 8 mask patterns x 2 transposition classes the claimant chose among
EARLY_CODES = 16  # null codes computed before deciding whether the rest can matter


@dataclass
class Frame:
    """Rows and columns of the suspect layer that play the code's rows and columns."""

    rows: np.ndarray
    cols: np.ndarray
    agree: int  # all modules
    data_agree: int  # data modules only (the statistic)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows.tolist(), "cols": self.cols.tolist(),
                "modules_agree": self.agree, "data_modules_agree": self.data_agree}


def _assign(gain: np.ndarray) -> np.ndarray:
    """For each code index (row of ``gain``) the suspect index it takes, maximising gain."""
    r, c = linear_sum_assignment(-gain)
    out = np.empty(gain.shape[0], dtype=np.int64)
    out[r] = c
    return out


def _sinkhorn(p: np.ndarray) -> np.ndarray:
    for _ in range(SINKHORN_ROUNDS):
        p = p / p.sum(axis=1, keepdims=True)
        p = p / np.maximum(p.sum(axis=0, keepdims=True), 1.0)
    return p


def _softassign(s: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A first frame from a uniform start: soft row and column assignments, annealed."""
    n = q.shape[0]
    o, i = s.shape
    rows = np.full((n, o), 1.0 / o)
    cols = np.full((n, i), 1.0 / i)
    for beta in BETAS:
        g = q @ cols @ s.T  # (n, o): gain of code row a on suspect row r
        rows = _sinkhorn(np.exp(beta * (g - g.max(axis=1, keepdims=True))))
        h = q.T @ rows @ s  # (n, i)
        cols = _sinkhorn(np.exp(beta * (h - h.max(axis=1, keepdims=True))))
    return _assign(rows), _assign(cols)


def _refine(s: np.ndarray, q: np.ndarray, rows: np.ndarray, cols: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Alternate exact matchings of rows given columns and columns given rows."""
    for _ in range(REFINE_ROUNDS):
        new_rows = _assign(q @ s[:, cols].T)
        new_cols = _assign(q.T @ s[new_rows])
        if np.array_equal(new_rows, rows) and np.array_equal(new_cols, cols):
            break
        rows, cols = new_rows, new_cols
    return rows, cols


def best_frame(conn: np.ndarray, code: np.ndarray, data: np.ndarray,
               start: tuple[int, int] | None = None) -> Frame:
    """The best frame the search finds for ``code`` (n x n bool, in the claimed orientation)
    in ``conn`` (O x I bool); ``data`` marks the data modules; ``start`` the claimed (row,
    col), a second start."""
    n = code.shape[0]
    s = conn.astype(np.float64) * 2.0 - 1.0
    q = code.astype(np.float64) * 2.0 - 1.0
    starts = [_softassign(s, q)]
    if start is not None and start[0] + n <= s.shape[0] and start[1] + n <= s.shape[1]:
        starts.append((np.arange(start[0], start[0] + n), np.arange(start[1], start[1] + n)))
    best: Frame | None = None
    for rows, cols in starts:
        rows, cols = _refine(s, q, rows, cols)
        block = conn[np.ix_(rows, cols)]
        agree = block == code
        frame = Frame(rows, cols, int(agree.sum()), int((agree & data).sum()))
        if best is None or (frame.agree, frame.data_agree) > (best.agree, best.data_agree):
            best = frame
    assert best is not None
    return best


@dataclass
class PermutationReading:
    frame: Frame
    layer: str
    null: SearchNull | None
    log10_p: float  # with the null and the claimant's CHOICES; 0 when the null stopped early

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.layer, **self.frame.to_json(),
                               "log10_p": self.log10_p, "p_value": 10.0 ** self.log10_p}
        if self.null is not None:
            out["null_codes"] = len(self.null.maxima)
            out["null_best_mean"] = float(self.null.maxima.mean())
            out["null_best_max"] = float(self.null.maxima.max())
        return out


def _null_code(tag: str, version: int, variant: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A random code under one of its mask patterns, maybe transposed, and its data map."""
    codes = [c for c in qr.all_masks(tag) if c.version == version]
    if not codes:
        return None
    c = codes[variant % len(codes)]
    data = ~qr.function_template(version)
    if (variant // len(codes)) % 2:
        return c.modules.T.copy(), data.T.copy()
    return c.modules, data


def read_permuted(conns: dict[str, np.ndarray], code: np.ndarray, data: np.ndarray,
                  version: int, tag: str, start: tuple[int, int] | None = None,
                  codes: int = CODES) -> PermutationReading:
    """The code's best frame over ``conns`` (the claimed layer, or every same-shape layer in
    a search) and its p-value against the same search for random codes."""
    found = {name: best_frame(c, code, data, start) for name, c in conns.items()}
    layer = max(found, key=lambda k: (found[k].data_agree, found[k].agree))
    frame = found[layer]
    seed = int(hashlib.sha256(b"permutation-null\0" + tag.encode()).hexdigest()[:8], 16)
    tags = random_tags(codes, len(tag), seed)
    maxima: list[float] = []
    for index, t in enumerate(tags):
        made = _null_code(t, version, index)
        if made is None:
            continue
        modules, mdata = made
        maxima.append(float(max(best_frame(c, modules, mdata).data_agree
                                for c in conns.values())))
        # An innocent suspect is the common case: once the claimed frame is no better than
        # the early codes' best, its p is large whatever the rest would add.
        if len(maxima) == EARLY_CODES and frame.data_agree <= max(maxima):
            return PermutationReading(frame, layer, None, 0.0)
    null = SearchNull(np.asarray(maxima), int(data.sum()), len(conns))
    log10_p = min(0.0, null.log10_sf(frame.data_agree) + math.log10(CHOICES))
    return PermutationReading(frame, layer, null, log10_p)
