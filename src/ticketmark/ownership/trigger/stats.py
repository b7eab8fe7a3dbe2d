"""The test behind a trigger verdict: one-sided binomial against chance.

Under the null (the suspect was not trained on this set), each queried slot matches its
label with probability ``p0``. For derived sets the labels are drawn independently of the
images, so ``p0 = 1/classes`` exactly; ``calibrate_null`` can instead set ``p0`` from
unmarked reference models (an upper confidence bound on their pooled match rate, never
below chance), which matters for folder sets whose labels a person chose.

Slots the owner excluded are counted as misses out of the full set size: a forger who
excludes the slots a model gets wrong gains nothing, because the count of matches over all
slots bounds the count over any subset.
"""

from __future__ import annotations

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
    """Null match rate from unmarked reference models: Clopper-Pearson upper bound, >= 1/K."""
    m, n = int(sum(matches)), int(sum(totals))
    if n <= 0:
        raise TicketmarkError("null calibration needs at least one queried reference slot")
    upper = 1.0 if m >= n else float(sps.beta.ppf(confidence, m + 1, n - m))
    return min(max(upper, 1.0 / classes), 1.0 - 1e-9)
