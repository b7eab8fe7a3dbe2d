"""A forger who searches the model for the block that best fits their own code is rejected."""

from __future__ import annotations

import math

import pytest

from ticketmark.io import load_ticket
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature.search_null import search_null
from ticketmark.ownership.verdict import NOT_OWNED, VerifyOptions


def test_searched_position_claim_is_not_owned(resnet_ticket, tmp_path):
    from ticketmark.demo.forgeries import search_claim
    from ticketmark.ownership.claims import save_claim
    from ticketmark.ownership.signature.verify import verify_claim

    pem, _ = keygen(tmp_path / "forger")
    ticket = load_ticket(resnet_ticket)
    claim = search_claim(pem, ticket, "forger")
    save_claim(tmp_path / "forged.json", claim)
    v = verify_claim(str(resnet_ticket), claim, VerifyOptions())
    assert v.status == NOT_OWNED, v.reason
    # The position alone looks significant: that is exactly the selection effect.
    assert v.evidence["log10_p_position"] < v.evidence["log10_p"]
    null = v.evidence["search_null"]
    assert null["claimed_agreement"] <= null["random_best_max"] + 5
    assert load_private_key(pem) is not None


def test_search_null_is_deterministic_and_tail_monotone(resnet_ticket):
    ticket = load_ticket(resnet_ticket)
    weights = {k: v for k, v in ticket.state.items() if v.dim() == 4}
    a = search_null(weights, {}, 1, 10, codes=8, seed=3)
    b = search_null(weights, {}, 1, 10, codes=8, seed=3)
    assert (a.maxima == b.maxima).all() and a.layers > 0
    lo, hi = a.log10_sf(int(a.maxima.mean())), a.log10_sf(a.modules)
    assert hi < lo <= 0 and math.isfinite(hi)


def test_null_maxima_match_a_window_by_window_search():
    """The fused float32 FFT search gives exactly what counting every window gives."""
    import torch

    from ticketmark.ownership.signature import placement, qr
    from ticketmark.ownership.signature.search_null import data_agreement, random_tags

    gen = torch.Generator().manual_seed(0)
    # Structured like a real ticket: some dead input channels, denser rows.
    w = torch.randn(40, 33, 3, 3, generator=gen)
    w[:, 5:9] = 0.0
    w[torch.rand(40, 33, 1, 1, generator=gen).expand_as(w) < 0.6] = 0.0
    null = search_null({"conv.weight": w}, {}, 1, 10, codes=3, seed=7)

    conn = (w.abs().sum(dim=(2, 3)) > 0).numpy()
    expected = []
    for tag in random_tags(3, 10, seed=7):
        best = 0
        for code in qr.all_masks(tag):
            for k in range(placement.ORIENTATIONS):
                drawn = placement.oriented(code.modules, k)
                for r in range(conn.shape[0] - 20):
                    for c in range(conn.shape[1] - 20):
                        block = placement.unorient(conn[r:r + 21, c:c + 21], k)
                        best = max(best, data_agreement(block, placement.unorient(drawn, k), 1))
        expected.append(best)
    assert null.maxima.tolist() == [float(b) for b in expected]
    assert null.layers == 1


def test_gumbel_tail_stays_conservative_through_its_own_fit():
    """The tail is fitted to CODES maxima, so the fit itself is a random draw: averaged over
    null draws (a forger who tries many tags draws many), a chance agreement must pass the
    1e-9 line no more often than that. Maxima drawn from a Gumbel (loc 135, scale 1.5, like
    a ResNet-20 ticket's); the chance of passing is exact given each fitted line."""
    import numpy as np

    from ticketmark.ownership.signature.search_null import CODES, SearchNull

    rng = np.random.default_rng(0)
    loc, scale = 135.0, 1.5
    passed = []
    for sample in rng.gumbel(loc, scale, size=(40_000, CODES)):
        line = SearchNull(sample, 208, 1).agreement_at(-9.0)
        passed.append(-math.expm1(-math.exp(-(line - loc) / scale)))
    # The plain moment fit (no confidence bound) gave 1.1e-7 with 32 codes, 1.4e-6 with 16.
    assert float(np.mean(passed)) < 2e-9, float(np.mean(passed))
    null = SearchNull(rng.gumbel(loc, scale, size=CODES), 208, 1)
    assert null.log10_sf(null.agreement_at(-9.0)) == pytest.approx(-9.0, abs=1e-6)


def test_an_innocent_suspect_stops_the_null_early_with_the_same_codes(resnet_ticket):
    """The first EARLY_CODES maxima are those of the full null (same seeded tags); a claim
    they already reach stops there, one that beats them gets every code."""
    from ticketmark.ownership.signature.search_null import CODES, EARLY_CODES

    ticket = load_ticket(resnet_ticket)
    weights = {k: v for k, v in ticket.state.items() if v.dim() == 4}
    full = search_null(weights, {}, 1, 10, seed=5)
    low = search_null(weights, {}, 1, 10, seed=5, stop_at=int(full.maxima.min()))
    high = search_null(weights, {}, 1, 10, seed=5, stop_at=int(full.maxima.max()) + 1)
    assert len(low.maxima) == EARLY_CODES and len(high.maxima) == len(full.maxima) == CODES
    assert (low.maxima == full.maxima[:EARLY_CODES]).all()
    assert (high.maxima == full.maxima).all()
    # Stopping early never makes a claim look rarer than it is: at the early sample's
    # maximum the p-value is large.
    assert low.log10_sf(float(low.maxima.max())) > -2


def test_fft_workspace_stays_in_the_heap_on_glibc():
    """The searches fix glibc's mmap threshold once (signature/heap.py): on this Linux
    machine mallopt accepts it, and a second call is the cached answer."""
    import platform

    from ticketmark.ownership.signature import heap

    first = heap.retain_freed_memory()
    assert heap.retain_freed_memory() is first
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
