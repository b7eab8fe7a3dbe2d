"""Embedding leaves alone a layer that already carries a QR code, so a second signer (a
thief using ticketmark) cannot erase the first owner's block, and the dispute names the
owner."""

from __future__ import annotations

import pytest
import torch

from tests.test_signature import owner_key, signed  # noqa: F401 - module fixtures
from ticketmark.errors import TicketmarkError
from ticketmark.io import save_ticket
from ticketmark.ownership.claims import load_claim, save_claim
from ticketmark.ownership.dispute import Claimant, decide
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import (
    EmbedOptions,
    embed_signature,
    existing,
    placement,
    qr,
    verify_claim,
)
from ticketmark.ownership.signature import embed as emb
from ticketmark.ownership.signature.embed import layer_connectivity
from ticketmark.ownership.verdict import OWNED, VerifyOptions
from ticketmark.sparsity import Mask


def _random_conn(density: float, seed: int, size: int = 64) -> torch.Tensor:
    return torch.rand(size, size, generator=torch.Generator().manual_seed(seed)) < density


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5, 0.95])
def test_a_drawn_code_is_found_in_any_orientation_and_noise_is_not(density):
    code = qr.make_code("HELLOWORLD", mask=5).modules
    for k in range(4):
        conn = _random_conn(density, seed=k)
        assert not existing.existing_codes({"l": conn}, 1)["l"].any()  # noise alone
        conn[7:28, 30:51] = torch.from_numpy(placement.oriented(code, k))
        found = existing.existing_codes({"l": conn}, 1)["l"]
        assert torch.nonzero(found).tolist() == [[7, 30]]


def test_plan_leaves_a_signed_layer_alone_and_says_so(signed):  # noqa: F811
    first = signed["summary"]
    codes = qr.all_masks(qr.make_tag("someone else", "m", "fp"))
    p = emb.plan(signed["ticket"].mask, codes, min_entries=4)
    assert p.existing == [{"layer": first["layer"], "row": first["row"], "col": first["col"]}]
    assert p.position.layer != first["layer"]
    assert all(c["layer"] != first["layer"] for c in p.candidates)
    # Forced into the signed layer, it refuses: drawing anywhere there would move entries
    # inside the existing code to keep the layer's count.
    with pytest.raises(TicketmarkError, match=r"already carries a QR code .*choose another"):
        emb.plan(signed["ticket"].mask, codes, first["layer"], min_entries=4)


def test_plan_refuses_when_every_layer_is_signed():
    code = qr.make_code("HELLOWORLD", mask=0).modules
    weight = torch.zeros(30, 30, 3, 3, dtype=torch.bool)
    weight[4:25, 6:27][torch.from_numpy(code)] = True
    with pytest.raises(TicketmarkError, match="every layer a code fits already carries"):
        emb.plan(Mask({"conv.weight": weight}), qr.all_masks("OTHERTAG00"), min_entries=1)


def test_second_signer_keeps_the_owner_and_loses(signed, tmp_path):  # noqa: F811
    thief_pem, _ = keygen(tmp_path / "thief")
    second = embed_signature(signed["ticket"], load_private_key(thief_pem), "the thief",
                             EmbedOptions(epochs=0, progress=False))
    assert second.summary["layer"] != signed["summary"]["layer"]
    found = existing.existing_codes(layer_connectivity(second.ticket.mask), 1)
    assert sum(int(v.sum()) for v in found.values()) == 2  # both codes are in the model
    thief_ticket = save_ticket(tmp_path / "thief_signed", second.ticket)
    thief_claim = save_claim(tmp_path / "thief.claim.json", second.claim)
    # The owner's claim still verifies on the thief's copy...
    v = verify_claim(str(thief_ticket), load_claim(signed["claim"]), VerifyOptions())
    assert v.status == OWNED and v.evidence["tag_decoded"] and v.evidence["flips"] == 0
    # ...and the dispute finds the owner's credential inside the thief's reference.
    result = decide(thief_ticket, [Claimant(signed["claim"], signed["path"]),
                                   Claimant(thief_claim, thief_ticket)])
    assert result.winner == 0, result.reason
