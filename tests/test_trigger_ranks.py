"""The rank test: a keyed label pushed from first place to second is still evidence.

Fine-tuning moves a marked model's answers back toward the image's own class, but the
keyed label tends to stay near the top. The test stays exact for any score function of
the suspect's answers alone, because the keyed labels are uniform draws independent of
them; these tests check that exactness, the points themselves, and what a verdict reports.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.trigger_support import marked_conv
from ticketmark.ownership.trigger.stats import (
    group_test,
    keyed_test,
    rank_points,
    rank_template,
)
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import NOT_OWNED, VerifyOptions

GROUPS = np.repeat(np.arange(20), 5)


def _rank_p(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray = GROUPS,
            n_groups: int = 20) -> float:
    return keyed_test(rank_points(scores), labels, groups, n_groups, 5, rank_template(10))[1]


def test_points_rank_the_top_and_ties_take_the_lower_place():
    assert rank_points(np.array([[0.1, 0.3, 0.3, -1.0]])).tolist() == [[1, 2, 2, 0]]
    assert rank_points(np.zeros((2, 10))).sum() == 0  # flattened scores earn nothing
    assert rank_template(10).tolist() == list(range(10))
    assert rank_template(20).tolist() == [0] * 10 + list(range(10))  # only the top 10 score


def test_rank_test_is_exact_under_the_null():
    """Labels drawn independently of biased, often tied scores: p never below its level."""
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, (100, 10)) * np.array([3, 2, 2, 1, 1, 0, 0, 0, 0, 0])
    ps = np.array([_rank_p(scores, np.repeat(rng.integers(0, 10, 20), 5))
                   for _ in range(2000)])
    for level in (0.01, 0.05, 0.2):  # within three standard errors of the level
        assert (ps <= level).mean() <= level + 3 * np.sqrt(level * (1 - level) / len(ps))
    assert (ps <= 0.5).mean() > 0.3  # and it is not a test that never rejects


def test_second_place_is_evidence_the_match_count_misses():
    rng = np.random.default_rng(2)
    labels = np.repeat(rng.integers(0, 10, 20), 5)
    source = (labels + 1 + rng.integers(0, 9, 100)) % 10  # the image's own class, != label
    scores = rng.normal(0, 1, (100, 10))
    scores[np.arange(100), source] = 10.0  # fine-tuning won first place back
    scores[np.arange(100), labels] = 5.0  # the keyed label kept second
    assert group_test(scores.argmax(1), labels, GROUPS, 20, 5, 10) [0] == 0
    p = _rank_p(scores, labels)
    assert p <= 0.2 ** 20 * 1.01  # each group: 2 of 10 labels score this high
    # Groups excluded in the claim score nothing against the widest law (every query
    # ranking the classes in one order): excluding groups after seeing the answers
    # cannot lower p, and costs a claim a group's whole chance share of points.
    kept = GROUPS >= 2
    assert p < _rank_p(scores[kept], labels[kept], GROUPS[kept]) < 1e-6
    assert _rank_p(scores[GROUPS < 10], labels[:50], GROUPS[:50]) > 0.5


def test_verdict_reports_both_tests_and_takes_the_bonferroni_minimum(conv_ticket):
    m = marked_conv(conv_ticket)
    v = verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file))
    ev = v.evidence
    assert v.owned and ev["rank_points"] > ev["rank_points_chance"]
    assert v.p_value == pytest.approx(min(1.0, 2 * min(ev["p_top1"], ev["p_rank"])))
    assert "rank points" in v.reason
    assert "(2 x the smaller of the match and rank tests)" in v.reason  # p names its test


def test_unmarked_model_earns_chance_points(conv_ticket, tmp_path):
    """The shared marked set, asked of the plain ticket that never saw it."""
    m = marked_conv(conv_ticket)
    v = verify_claim(str(conv_ticket), m.claim, VerifyOptions(reveal=m.seed_file))
    assert v.status == NOT_OWNED and v.evidence["p_rank"] > 1e-3
    assert "points" in v.reason and "match and rank tests) is not below" in v.reason


def test_excluding_the_worst_groups_after_the_fact_does_not_help_a_forger():
    """A forger who sees an unmarked model's answers and excludes the groups that scored
    least still gets no small p more often than the level allows."""
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(1000):
        # Answers alike within a group (the same mark), as a real model's would be.
        scores = np.repeat(rng.normal(size=(20, 10)), 5, 0) + 0.3 * rng.normal(size=(100, 10))
        labels = np.repeat(rng.integers(0, 10, 20), 5)
        points = rank_points(scores)
        earned = np.bincount(GROUPS, weights=points[np.arange(100), labels], minlength=20)
        keep = np.isin(GROUPS, np.argsort(earned)[2:])  # the two worst groups excluded
        ps.append(keyed_test(points[keep], labels[keep], GROUPS[keep], 20, 5,
                             rank_template(10))[1])
    ps = np.array(ps)
    for level in (0.05, 0.2):
        assert (ps <= level).mean() <= level + 3 * np.sqrt(level * (1 - level) / len(ps))


def test_weights_that_overflow_on_the_set_could_not_verify(conv_ticket, tmp_path):
    """Scores that are not numbers rank nothing: COULD NOT VERIFY, as the server's 500."""
    import torch

    from ticketmark.io import load_ticket, save_ticket
    from ticketmark.ownership.verdict import UNVERIFIABLE

    m = marked_conv(conv_ticket)
    t = load_ticket(m.ticket)
    model = t.build()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    path = save_ticket(tmp_path / "overflow.safetensors", t.with_model(model))
    v = verify_claim(str(path), m.claim, VerifyOptions(reveal=m.seed_file))
    assert v.status == UNVERIFIABLE and "non-finite scores" in v.reason, v.reason
