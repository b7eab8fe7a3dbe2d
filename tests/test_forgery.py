"""No false OWNED, whoever supplies the claim, the reference and the reveal.

Each test builds one forgery end to end, the way a forger who read the code would, and
checks that ``verify`` says NOT OWNED. On the code before this suite each of them read
OWNED: the suspect was re-aligned to a frame the claimant supplied (a reference, or the
claim's channel fingerprints) and the agreement in that frame decided. The tests assert
that the claimant's frame *would* have produced that agreement (``realigned``), so they
cannot pass by the forgery simply being weak.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import one_line_error, run_cli
from ticketmark.attacks import finetune
from ticketmark.attacks.forge import crafted_claim
from ticketmark.errors import TicketmarkError
from ticketmark.finding import FindConfig, run_imp
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.ownership.claims import load_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import hidden
from ticketmark.ownership.signature.embed import EmbedOptions, embed_signature
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, VerifyOptions
from ticketmark.ownership.verify import verify_claim
from ticketmark.training import TrainConfig

LAYER = "layer3.2.conv2.weight"  # a 64x64 layer of resnet20s, where a code fits


@pytest.fixture(scope="module")
def owner(resnet_ticket, tmp_path_factory):
    """The owner's genuine files: a signed ticket, its claim and its reveal."""
    out = tmp_path_factory.mktemp("owner")
    key = keygen(out / "owner")[0]
    res = embed_signature(load_ticket(resnet_ticket), load_private_key(key), "ACME",
                          EmbedOptions(epochs=1, progress=False))
    return {"path": save_ticket(out / "signed", res.ticket), "ticket": res.ticket,
            "claim": save_claim(out / "signed.claim.json", res.claim),
            "reveal": hidden.save_reveal(out / "signed.reveal.json", res.reveal),
            "dir": out}


@pytest.fixture(scope="module")
def stranger(tmp_path_factory) -> Ticket:
    """An independently trained resnet20s (another seed): nobody's claim is in it."""
    out = tmp_path_factory.mktemp("stranger")
    cfg = FindConfig(model="resnet20s", dataset="digits", rounds=1, rate=0.6, rewind_epoch=1,
                     train=TrainConfig(epochs=2, batch_size=64, seed=7))
    run_imp(cfg, out, progress=False)
    return load_ticket(out / "ticket.safetensors")


def _verify(suspect, claim, **kw):
    return verify_claim(str(suspect), load_claim(claim), VerifyOptions(**kw))


def _would_have_owned(evidence: dict) -> bool:
    """What the old rule did with a re-aligned reading: a decoded tag, or p < 1e-9."""
    r = evidence.get("realigned")
    return r is not None and (r["tag_decoded"] or r["log10_p_if_frame_were_fixed"] < -9)


@pytest.mark.parametrize("orientation", [0, 1])
def test_a_reference_crafted_from_the_suspect_is_not_owned(resnet_ticket, tmp_path,
                                                           orientation):
    """The suspect is a ticket the forger never touched (no lineage with his key); his
    reference is the suspect's own weights with the claimed layer's channels reordered by
    his search, and his claim is signed over that reference (a fresh claim binds it)."""
    innocent = load_ticket(resnet_ticket)
    key = keygen(tmp_path / "forger")[0]
    claim, ref, made = crafted_claim(key, innocent, LAYER, tmp_path / "crafted",
                                     orientation=orientation)
    claim_path = save_claim(tmp_path / "forger.claim.json", claim)
    v = _verify(resnet_ticket, claim_path, reference=ref)
    assert v.status == NOT_OWNED, v.reason
    assert _would_have_owned(v.evidence), v.evidence.get("realigned")
    assert v.evidence["realigned"]["agree"] >= made["frame_agree"] - 5
    assert "claimant's choice" in v.reason
    # Without the reference, the claim's channel fingerprints (also the forger's) choose
    # the frame: not evidence either.
    plain = _verify(resnet_ticket, claim_path)
    assert plain.status == NOT_OWNED, plain.reason
    assert plain.evidence["frame_from_claimant"] is False


def test_the_owners_claim_with_other_trained_weights_in_the_reference_is_refused(owner,
                                                                                  tmp_path):
    """Mask and rewind untouched (so the fingerprint matches), trained conv weights
    permuted: the claim binds the trained weights, so the reference is refused."""
    t = owner["ticket"]
    state = dict(t.state)
    w = state[LAYER]
    state[LAYER] = w[torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))]
    crafted = Ticket(t.model_name, t.dataset, t.in_channels, t.num_classes, t.image_size,
                     state, t.mask, t.rewind, t.meta)
    path = save_ticket(tmp_path / "crafted", crafted)
    assert crafted.fingerprint() == t.fingerprint()
    with pytest.raises(TicketmarkError, match="reference digest differs"):
        _verify(owner["path"], owner["claim"], reference=path)
    res = run_cli("verify", "--suspect", owner["path"], "--claim", owner["claim"],
                  "--reference", path)
    assert "reference digest differs" in one_line_error(res)


def test_the_owners_genuine_files_on_a_stranger_are_not_owned(owner, stranger, tmp_path):
    """The owner's claim, reveal and reference on an independently trained model."""
    path = save_ticket(tmp_path / "stranger", stranger)
    v = _verify(path, owner["claim"], reveal=owner["reveal"], reference=owner["path"])
    assert v.status == NOT_OWNED, v.reason
    assert v.evidence["hidden_log10_p"] > math.log10(hidden.THRESHOLD)
    assert v.evidence["derived"] == "NOT DERIVED"


def test_a_fine_tune_of_the_presigning_ticket_is_not_owned(owner, resnet_ticket, digits,
                                                           tmp_path):
    """The ticket before signing never carried the marks; fine-tuned, it must not read
    OWNED through the owner's reference, although it derives from it."""
    plain = load_ticket(resnet_ticket)
    tuned = finetune(plain.build(), digits, epochs=1, keep_mask=plain.mask)
    path = save_ticket(tmp_path / "tuned", Ticket(
        plain.model_name, plain.dataset, plain.in_channels, plain.num_classes,
        plain.image_size, state_of(tuned), plain.mask, None, {}))
    v = _verify(path, owner["claim"], reveal=owner["reveal"], reference=owner["path"])
    assert v.status == NOT_OWNED, v.reason
    assert v.evidence["hidden_log10_p"] > math.log10(hidden.THRESHOLD)


def test_the_owners_own_release_still_reads_owned(owner):
    v = _verify(owner["path"], owner["claim"], reveal=owner["reveal"], reference=owner["path"])
    assert v.status == OWNED, v.reason
    assert v.evidence["derived"] == "DERIVED"
