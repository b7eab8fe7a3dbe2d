"""The tests behind a trigger verdict: exact, conditional on the suspect's own answers.

Derived sets (``group_test``): each group of queries carries one mark and one label drawn
uniformly from the seed's stream, independently of everything the suspect does. Given the
suspect's answers, a group's match count is therefore ``h_j(label_j)``, where ``h_j(c)`` is
how many of the group's queries the suspect answered ``c``: under the null (the suspect
never learned this set) that is a uniform draw from the ``classes`` values ``h_j(0..K-1)``.
The null law of the total is the convolution of those per-group laws, computed exactly;
p is its tail at the observed total. Nothing is assumed about the suspect's biases: a
model that answers "8" to every stamped image matches a whole group, but only with
probability 1/K, and the test knows it. With one query per group this is the binomial
test against ``1/classes``.

Groups the owner excluded count as misses, with the widest null law a group can have (all
its queries matching with probability 1/K): a forger who excludes the groups a model gets
wrong after the fact gains nothing.

Folder sets (``binomial_p`` with ``calibrate_null``): a person chose those labels, so the
null match rate comes from models known to be unmarked (independently trained), never from
the claimant's own reference ticket.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from ticketmark.errors import TicketmarkError

DEFAULT_THRESHOLD = 1e-6


def binomial_p(matches: int, n: int, p0: float) -> float:
    """P[Binomial(n, p0) >= matches]: the chance of at least this many matches by luck."""
    if not 0 <= matches <= n:
        raise TicketmarkError(f"matches {matches} out of range for {n} trials")
    if not 0.0 < p0 < 1.0:
        raise TicketmarkError(f"null match probability must be in (0, 1), got {p0}")
    return float(sps.binom.sf(matches - 1, n, p0))


def calibrate_null(matches: list[int], totals: list[int], classes: int,
                   confidence: float = 0.99) -> float:
    """Null match rate from unmarked models: Clopper-Pearson upper bound, >= 1/K."""
    m, n = int(sum(matches)), int(sum(totals))
    if n <= 0:
        raise TicketmarkError("null calibration needs at least one queried reference slot")
    upper = 1.0 if m >= n else float(sps.beta.ppf(confidence, m + 1, n - m))
    return min(max(upper, 1.0 / classes), 1.0 - 1e-9)


def group_test(pred: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int,
               per_group: int, classes: int) -> tuple[int, float]:
    """(matches, p) for the queried answers ``pred`` of the kept queries.

    ``labels`` and ``groups`` belong to the same queries; groups of ``0..n_groups-1``
    without any query were excluded and count as misses with the widest null.
    """
    pred, labels, groups = (np.asarray(a, dtype=np.int64) for a in (pred, labels, groups))
    matches = int((pred == labels).sum())
    if per_group == 1:  # every group is a Bernoulli(1/K): the binomial test, at any size
        return matches, binomial_p(matches, n_groups, 1.0 / classes)
    hist = np.zeros((n_groups, classes), dtype=np.int64)  # h_j(c)
    np.add.at(hist, (groups, pred), 1)
    queried = np.zeros(n_groups, dtype=bool)
    queried[groups] = True
    hist[~queried, 0] = per_group  # excluded: all r queries match with probability 1/K
    # Per-group null law over 0..r, then the convolution over groups (all terms >= 0, so
    # the tail is accurate far below machine epsilon).
    law = np.zeros((n_groups, per_group + 1))
    np.add.at(law, (np.repeat(np.arange(n_groups), classes), hist.ravel()), 1.0 / classes)
    total = np.ones(1)
    for row in law:
        total = np.convolve(total, row)
    return matches, float(min(1.0, total[matches:].sum()))
