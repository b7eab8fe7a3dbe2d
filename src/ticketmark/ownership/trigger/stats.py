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
RANK_TOP = 10  # places of a score answer that earn points (bounds the exact law)
MAX_LAW_SPAN = 20_000  # groups x (values per group): the exact law's length


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
    """(matches, p) for the queried top-1 answers ``pred`` of the kept queries.

    ``labels`` and ``groups`` belong to the same queries; groups of ``0..n_groups-1``
    without any query were excluded and count as misses with the widest null law.
    """
    pred, labels = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    matches = int((pred == labels).sum())
    if per_group == 1:  # every group is a Bernoulli(1/K): the binomial test, at any size
        return matches, binomial_p(matches, n_groups, 1.0 / classes)
    points = np.zeros((len(pred), classes), dtype=np.int64)
    points[np.arange(len(pred)), pred] = 1
    template = np.zeros(classes, dtype=np.int64)
    template[-1] = 1
    return matches, keyed_test(points, labels, groups, n_groups, per_group, template)[1]


def rank_points(scores: np.ndarray, top: int = RANK_TOP) -> np.ndarray:
    """(N, K) points: how far above the bottom of the model's top ``top`` each class is.

    A class the model ranks first gets ``top - 1`` points, second ``top - 2``, ..., and
    everything from place ``top`` down none. Tied classes all take the lowest place of
    the tie, so a model that flattens its scores earns nothing from it. Any function of
    the answers alone keeps the test exact; this one keeps the top-1 information (a
    match is the maximum) and adds how close the keyed label came.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or not np.isfinite(scores).all():
        raise TicketmarkError("rank points need a finite (queries, classes) score array")
    k = scores.shape[1]
    places_above = k - sps.rankdata(scores, method="min", axis=1).astype(np.int64)
    return np.maximum(0, min(top, k) - 1 - places_above)


def rank_template(classes: int, top: int = RANK_TOP) -> np.ndarray:
    """The points one untied answer hands out over the classes, lowest first."""
    return rank_points(np.arange(classes, dtype=np.float64)[None], top)[0]


def exact_law_is_cheap(n_groups: int, per_group: int, template: np.ndarray) -> bool:
    """Whether the convolution over groups stays small (its cost grows as (G * r * max)^2)."""
    return n_groups * (per_group * int(template.max()) + 1) <= MAX_LAW_SPAN


def keyed_test(points: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int,
               per_group: int, template: np.ndarray) -> tuple[int, float]:
    """(points the keyed labels took, their exact p), given the suspect's answers.

    ``points`` (N, K) is any function of the suspect's answers alone: one-hot top-1
    labels (the match count) or ``rank_points``. Group ``j`` scores ``s_j(label_j)``,
    ``s_j(c)`` the sum of its queries' points for class ``c``; under the null the label
    is a uniform draw, so the group's law is uniform over ``s_j(0..K-1)`` and the total's
    law is the convolution over groups. Excluded groups (no queries) score nothing
    against the widest law a group can have: all its queries giving ``template``'s points
    in one order (``per_group * template``, each with probability 1/K).
    """
    points = np.asarray(points, dtype=np.int64)
    labels, groups = (np.asarray(a, dtype=np.int64) for a in (labels, groups))
    classes = points.shape[1]
    observed = int(points[np.arange(len(points)), labels].sum())
    sums = np.zeros((n_groups, classes), dtype=np.int64)  # s_j(c)
    np.add.at(sums, groups, points)
    queried = np.zeros(n_groups, dtype=bool)
    queried[groups] = True
    sums[~queried] = per_group * np.asarray(template, dtype=np.int64)
    law = np.zeros((n_groups, int(sums.max()) + 1))
    np.add.at(law, (np.repeat(np.arange(n_groups), classes), sums.ravel()), 1.0 / classes)
    total = np.ones(1)
    for row in law:  # all terms >= 0: the tail is accurate far below machine epsilon
        total = np.convolve(total, row)
    return observed, float(min(1.0, total[observed:].sum()))
