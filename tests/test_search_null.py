"""A forger who searches the model for the block that best fits their own code is rejected."""

from __future__ import annotations

import math

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
