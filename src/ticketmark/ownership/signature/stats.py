"""How surprising is the agreement between an extracted block and the expected code?

Two nulls, both exact, both computed in log space so that p-values far below 1e-300 are
still ordered correctly (reported as their log10 too):

* ``binomial``: every connection of the block is drawn independently at the layer's own
  connectivity density rho. Agreements on the dark modules are Binomial(n_dark, rho), on the
  light ones Binomial(n_light, 1 - rho); the p-value is the upper tail of their sum.
* ``rowcol``: real masks are not i.i.d. (dead output channels, dense input channels). Each
  module gets its own probability ``p_ij = r_i c_j / rho`` from the density of its row and
  its column *outside* the block (so the code itself does not inflate the null), and the
  agreement count is a Poisson-binomial whose tail is computed by an exact recursion.

Both treat the *mask* as the random thing, and real masks are not random enough: on an
IMP ticket's layers 27% of random codes got p < 0.2 at a random position (a machine whose
ticket came out differently failed the calibration test). So the position p-value the
verdict uses treats the *code* as random instead, which is what is true for a model made
without the owner's tag:

* ``code``: the tag is a hash the model's maker could not know, so on the modules that
  depend on the tag (``qr.variable_modules``) each module of the expected code is a fair
  coin independent of the model; the agreement there is Binomial(V, 1/2) whatever the
  mask looks like. (QR data bits are a Reed-Solomon image of 55 random bits, pairwise
  independent, so the binomial holds to second order; calibration is measured in tests.)

``binomial`` and ``rowcol`` stay in the evidence as details.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binom

LN10 = math.log(10.0)
EPS = 1e-3  # keeps per-module probabilities off 0 and 1 (a row seen empty is not certain)


@dataclass(frozen=True)
class Agreement:
    """Bit agreement between an extracted block and the expected code."""

    n_dark: int
    n_light: int
    agree_dark: int
    agree_light: int

    @property
    def total(self) -> int:
        return self.n_dark + self.n_light

    @property
    def agree(self) -> int:
        return self.agree_dark + self.agree_light

    @property
    def flips(self) -> int:
        return self.total - self.agree

    @property
    def flip_rate(self) -> float:
        return self.flips / max(1, self.total)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agree": self.agree, "flips": self.flips,
                "flip_rate": self.flip_rate}


def agreement(extracted: np.ndarray, expected: np.ndarray) -> Agreement:
    dark = expected.astype(bool)
    ext = extracted.astype(bool)
    return Agreement(int(dark.sum()), int((~dark).sum()), int((ext & dark).sum()),
                     int((~ext & ~dark).sum()))


def log_binomial_tail(a: Agreement, rho: float) -> float:
    """ln P(X_dark + X_light >= observed) with X_dark ~ Bin(n_dark, rho), X_light ~
    Bin(n_light, 1 - rho): exact, summed over every (j, k) pair with j + k >= observed."""
    rho = min(max(rho, EPS), 1 - EPS)
    ld = binom.logpmf(np.arange(a.n_dark + 1), a.n_dark, rho)
    ll = binom.logpmf(np.arange(a.n_light + 1), a.n_light, 1 - rho)
    joint = ld[:, None] + ll[None, :]
    total = np.add.outer(np.arange(a.n_dark + 1), np.arange(a.n_light + 1))
    return float(min(0.0, logsumexp(joint[total >= a.agree])))


def log_poisson_binomial_tail(q: np.ndarray, observed: int) -> float:
    """ln P(sum of independent Bernoulli(q_i) >= observed), by the exact recursion."""
    q = np.clip(np.asarray(q, dtype=np.float64).ravel(), EPS, 1 - EPS)
    logp = np.full(q.size + 1, -np.inf)
    logp[0] = 0.0
    for i, qi in enumerate(q, start=1):
        stay = logp[:i + 1] + math.log1p(-qi)
        move = np.concatenate(([-np.inf], logp[:i] + math.log(qi)))
        logp[:i + 1] = np.logaddexp(stay, move)
    if observed <= 0:
        return 0.0
    return float(min(0.0, logsumexp(logp[observed:])))


def module_probabilities(conn: np.ndarray, row: int, col: int, n: int) -> np.ndarray:
    """P(connection) per module of the block at (row, col) under the row/column null.

    Row densities are measured over the columns outside the block and column densities over
    the rows outside it; with nothing outside, the layer's density stands in.
    """
    conn = conn.astype(np.float64)
    o, i = conn.shape
    outside_cols = np.ones(i, dtype=bool)
    outside_cols[col:col + n] = False
    outside_rows = np.ones(o, dtype=bool)
    outside_rows[row:row + n] = False
    rest = conn[np.ix_(outside_rows, outside_cols)]
    rho = float(rest.mean()) if rest.size else float(conn.mean())
    rows = conn[row:row + n][:, outside_cols]
    cols = conn[:, col:col + n][outside_rows]
    r = rows.mean(axis=1) if rows.shape[1] else np.full(n, rho)
    c = cols.mean(axis=0) if cols.shape[0] else np.full(n, rho)
    if rho <= 0:
        return np.full((n, n), EPS)
    return np.clip(np.outer(r, c) / rho, EPS, 1 - EPS)


@dataclass(frozen=True)
class PValues:
    log10_binomial: float
    log10_rowcol: float
    density: float
    log10_code: float | None = None  # the code-random null (module docstring)
    variable_agree: int = 0
    variable_total: int = 0

    @property
    def log10_p(self) -> float:
        """The verdict's statistic: the code-random null when known, else the more
        conservative of the two mask nulls."""
        if self.log10_code is not None:
            return self.log10_code
        return max(self.log10_binomial, self.log10_rowcol)

    @property
    def p(self) -> float:
        return 10.0 ** self.log10_p

    def to_json(self) -> dict[str, Any]:
        return {"p_value": self.p, "log10_p": self.log10_p,
                "p_binomial": 10.0 ** self.log10_binomial,
                "log10_p_binomial": self.log10_binomial,
                "p_rowcol": 10.0 ** self.log10_rowcol, "log10_p_rowcol": self.log10_rowcol,
                "layer_connectivity_density": self.density,
                "tag_modules_agree": self.variable_agree,
                "tag_modules": self.variable_total}


def log_code_tail(agree: int, total: int) -> float:
    """ln P(Binomial(total, 1/2) >= agree)."""
    if total <= 0 or agree <= 0:
        return 0.0
    return float(min(0.0, binom.logsf(agree - 1, total, 0.5)))


def p_values(conn: np.ndarray, expected_drawn: np.ndarray, row: int, col: int,
             variable_drawn: np.ndarray | None = None) -> PValues:
    """The nulls for the code ``expected_drawn`` (in the layer's frame) at (row, col);
    ``variable_drawn`` (same frame) marks the tag-dependent modules for the code null."""
    n = expected_drawn.shape[0]
    blk = conn[row:row + n, col:col + n].astype(bool)
    a = agreement(blk, expected_drawn)
    rho = float(conn.mean())
    lb = log_binomial_tail(a, rho)
    probs = module_probabilities(conn, row, col, n)
    q = np.where(expected_drawn.astype(bool), probs, 1 - probs)
    lr = log_poisson_binomial_tail(q, a.agree)
    if variable_drawn is None:
        return PValues(lb / LN10, lr / LN10, rho)
    var = variable_drawn.astype(bool)
    va = int((blk[var] == expected_drawn.astype(bool)[var]).sum())
    vt = int(var.sum())
    return PValues(lb / LN10, lr / LN10, rho, log_code_tail(va, vt) / LN10, va, vt)
