"""Embedding keeps clear of a QR code already in the ticket, so a second signer (a thief
using ticketmark) cannot erase the first owner's block, and the dispute names the owner."""

from __future__ import annotations

import numpy as np
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


def test_overlapping_marks_exactly_the_windows_that_intersect():
    starts = torch.zeros(30, 40, dtype=torch.bool)
    starts[12, 5] = True
    n = 4
    got = placement.overlapping(starts, n)
    rows, cols = np.meshgrid(np.arange(30), np.arange(40), indexing="ij")
    want = (np.abs(rows - 12) < n) & (np.abs(cols - 5) < n)
    assert np.array_equal(got.numpy(), want)
    assert not placement.overlapping(torch.zeros(5, 5, dtype=torch.bool), n).any()


def test_plan_keeps_clear_of_an_existing_code_and_says_so(signed):  # noqa: F811
    first = signed["summary"]
    codes = qr.all_masks(qr.make_tag("someone else", "m", "fp"))
    p = emb.plan(signed["ticket"].mask, codes, min_entries=4)
    n = codes[0].size
    assert p.existing == [{"layer": first["layer"], "row": first["row"], "col": first["col"]}]
    same_layer = p.position.layer == first["layer"]
    assert not (same_layer and abs(p.position.row - first["row"]) < n
                and abs(p.position.col - first["col"]) < n)
    # Forced into the signed layer, it still finds room beside the code, never on it.
    q = emb.plan(signed["ticket"].mask, codes, first["layer"], min_entries=4)
    assert abs(q.position.row - first["row"]) >= n or abs(q.position.col - first["col"]) >= n


def test_plan_refuses_when_every_place_is_taken():
    code = qr.make_code("HELLOWORLD", mask=0).modules
    weight = torch.zeros(21, 21, 3, 3, dtype=torch.bool)
    weight[torch.from_numpy(code)] = True  # the whole layer is one code
    from ticketmark.sparsity import Mask

    with pytest.raises(TicketmarkError, match="taken by a QR code already in the ticket"):
        emb.plan(Mask({"conv.weight": weight}), qr.all_masks("OTHERTAG00"), min_entries=1)


def test_second_signer_keeps_the_owner_and_loses(signed, tmp_path):  # noqa: F811
    thief_pem, _ = keygen(tmp_path / "thief")
    second = embed_signature(signed["ticket"], load_private_key(thief_pem), "the thief",
                             EmbedOptions(epochs=0, progress=False))
    found = existing.existing_codes(layer_connectivity(second.ticket.mask), 1)
    assert sum(int(v.sum()) for v in found.values()) == 2  # both codes are in the model
    thief_ticket = save_ticket(tmp_path / "thief_signed", second.ticket)
    thief_claim = save_claim(tmp_path / "thief.claim.json", second.claim)
    # The owner's claim still verifies on the thief's copy...
    v = verify_claim(str(thief_ticket), load_claim(signed["claim"]), VerifyOptions())
    assert v.status == OWNED and v.evidence["tag_decoded"], v.reason
    # ...and the dispute finds the owner's credential inside the thief's reference.
    result = decide(thief_ticket, [Claimant(signed["claim"], signed["path"]),
                                   Claimant(thief_claim, thief_ticket)])
    assert result.winner == 0, result.reason
