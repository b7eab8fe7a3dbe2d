"""A thief launders the owner's release and signs it: the owner must not lose the dispute.

Laundering (the recipe measured from outside the project): re-randomise the owner's
visible QR block, prune half of the kept weights at random, permute every channel group,
fine-tune with the mask kept, make those weights the rewind point, and sign the result with
the thief's own key. Before this suite ``derive`` called the copy NOT DERIVED (p 0.54) and
the thief won. Now derivation follows the channels through the network's wiring
(``ownership.wiring``), so the model is linked to the owner; with the owner's claim
time-stamped first the owner wins, and without trusted time nobody does (the evidence is
symmetric: a model derived from a ticket does not say which of the two came first).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.dispute_support import overwrite_block
from tests.tsa_support import OPENSSL, start_tsa
from ticketmark.attacks import apply_attack
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.ownership.claims import save_claim
from ticketmark.ownership.derive import derive
from ticketmark.ownership.dispute import Claimant, decide
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import hidden
from ticketmark.ownership.signature.embed import EmbedOptions, embed_signature
from ticketmark.ownership.timestamp import load_trust_store, timestamp_claim

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


def adam_finetune(ticket: Ticket, data, epochs: int) -> Ticket:
    """The thief's own loop (not ticketmark's trainer): Adam at 1e-3, mask kept, on the
    thief's half of the training data."""
    model = ticket.build()
    model.train()
    thief = data.train.part("thief", 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(3)
    for _ in range(epochs):
        for idx in torch.randperm(len(thief), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(thief.x[idx]), thief.y[idx]).backward()
            opt.step()
            ticket.mask.apply(model)
    model.eval()
    return dataclasses.replace(ticket, state=state_of(model))


def launder(release: Ticket, claim, data, prune: dict, adam: bool = False) -> Ticket:
    t = overwrite_block(release, claim)
    t = apply_attack(t, "prune", prune, data)
    t = apply_attack(t, "permute", {"seed": 11}, data)
    t = adam_finetune(t, data, 2) if adam else apply_attack(
        t, "finetune", {"mode": "all", "epochs": 3, "keep_mask": True}, data)
    # Those weights become the rewind point, so the thief's embed retrains from them.
    return dataclasses.replace(t, rewind={k: v.clone() for k, v in t.state.items()})


def scene(root: Path, resnet_ticket: Path, data, prune: dict, adam: bool = False) -> dict:
    tsa = start_tsa(root / "tsa", "Trusted")
    owner_key = keygen(root / "owner")[0]
    signed = embed_signature(load_ticket(resnet_ticket), load_private_key(owner_key), "ACME",
                             EmbedOptions(epochs=1, progress=False))
    release = save_ticket(root / "release", signed.ticket)
    owner_claim = save_claim(root / "owner.claim.json", signed.claim)
    reveal = hidden.save_reveal(root / "owner.reveal.json", signed.reveal)
    timestamp_claim(owner_claim, tsa.url)  # the owner stamps before release
    laundered = launder(signed.ticket, signed.claim, data, prune, adam)
    thief_key = keygen(root / "thief")[0]
    thief = embed_signature(laundered, load_private_key(thief_key), "Thief Inc",
                            EmbedOptions(epochs=1, min_entries=2, progress=False))
    thief_path = save_ticket(root / "thief_signed", thief.ticket)
    thief_claim = save_claim(root / "thief.claim.json", thief.claim)
    timestamp_claim(thief_claim, tsa.url)  # ...and the thief after him
    tsa.close()
    return {"release": release, "owner_claim": owner_claim, "reveal": reveal,
            "thief": thief_path, "thief_claim": thief_claim,
            "trust": load_trust_store([root / "tsa" / "ca.pem"]), "ticket": signed.ticket}


def _claimants(s: dict) -> list[Claimant]:
    return [Claimant(s["owner_claim"], s["release"], s["reveal"]),
            Claimant(s["thief_claim"], s["thief"])]


@pytest.fixture(scope="module")
def laundered(tmp_path_factory, resnet_ticket, digits):
    return scene(tmp_path_factory.mktemp("launder"), resnet_ticket, digits,
                 {"method": "random", "ratio": 0.5})


def test_the_laundered_copy_derives_from_the_owners_release(laundered):
    d = derive(load_ticket(laundered["thief"]).state, laundered["ticket"])
    assert d.derived, d.reason


def test_the_owner_who_stamped_first_wins(laundered):
    res = decide(laundered["thief"], _claimants(laundered), trusted=laundered["trust"])
    assert res.winner == 0, res.reason
    assert "derived from A's reference" in " ".join(res.steps)


def test_without_trusted_time_the_thief_does_not_win(laundered):
    res = decide(laundered["thief"], _claimants(laundered))
    assert res.winner is None, res.reason


@pytest.mark.slow
@pytest.mark.parametrize("prune,adam", [({"method": "global", "ratio": 0.5}, False),
                                        ({"method": "random", "ratio": 0.3}, True),
                                        ({"method": "layer", "ratio": 0.5}, True)])
def test_laundering_variants_go_to_the_owner(tmp_path, resnet_ticket, digits, prune, adam):
    s = scene(tmp_path, resnet_ticket, digits, prune, adam)
    res = decide(s["thief"], _claimants(s), trusted=s["trust"])
    assert res.winner == 0, res.reason
    assert decide(s["thief"], _claimants(s)).winner is None


def test_the_thiefs_adam_loop_trains_and_keeps_the_mask(digits, resnet_ticket):
    t = load_ticket(resnet_ticket)
    tuned = adam_finetune(t, digits, 1)
    name = next(iter(t.mask))
    assert not torch.equal(tuned.state[name], t.state[name])
    assert not bool(((tuned.state[name] != 0) & ~t.mask[name]).any())
