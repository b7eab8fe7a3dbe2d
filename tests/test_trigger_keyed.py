"""Trigger sets bound to the owner's key: re-signed claims, foreign reveals, disputes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.trigger_support import marked_conv
from ticketmark.ownership.claims import make_claim, save_claim
from ticketmark.ownership.dispute import Claimant, decide
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.trigger.commitment import (
    derived_claim_params,
    new_nonce,
    owner_reveal,
    save_reveal,
)
from ticketmark.ownership.trigger.generate import TriggerParams
from ticketmark.ownership.trigger.stats import group_test
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, VerifyOptions


def _thief_copy(m, tmp_path):
    """The owner's trigger commitments pasted into a claim the thief signs."""
    thief = load_private_key(keygen(tmp_path / "thief")[0])
    claim = make_claim(thief, "trigger", m.claim.body["model_fingerprint"], m.claim.params,
                       "the thief")
    return claim, save_claim(tmp_path / "thief.claim.json", claim)


def test_resigned_claim_not_owned_even_with_owners_reveal(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    assert verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file)).owned
    claim, _ = _thief_copy(m, tmp_path)
    assert claim.signature_valid()  # a well-formed claim, validly signed by the thief
    v = verify_claim(str(m.ticket), claim, VerifyOptions(reveal=m.seed_file))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is False
    assert "another key" in v.reason


def test_dispute_names_the_owner_over_a_resigned_claim(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    _, thief_file = _thief_copy(m, tmp_path)
    # The thief files first and borrows the owner's reveal; the reference the owner gives
    # (the marked release itself) must not spoil the owner's verdict either.
    res = run_cli("dispute", "--model", m.ticket, "--claim", thief_file, "--claim",
                  m.claim_file, "--reveal-a", m.seed_file, "--reveal-b", m.seed_file,
                  "--reference-b", m.ticket, "--report", tmp_path / "rep")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"WINNER: claim B ({m.claim_file})" in res.stdout
    report = json.loads((tmp_path / "rep" / "dispute.json").read_text())
    assert report["winner"] == "B"
    assert report["verdicts"][0]["evidence"]["reveal_valid"] is False


@pytest.mark.slow  # over 15 s on 2 cores; the default run stays under 10 min
def test_dispute_reference_is_not_used_as_a_null(conv_ticket, tmp_path):
    """Issue 16: ``--reference-a`` used to calibrate the null on the owner's own marked
    ticket, so the owner's claim failed on the untouched release."""
    m = marked_conv(conv_ticket)
    result = decide(m.ticket, [Claimant(m.claim_file, m.ticket, m.seed_file),
                               Claimant(m.claim_file, conv_ticket, m.seed_file)])
    assert all(v.status == OWNED for v in result.verdicts), result.reason


def test_reveal_by_another_key_rejected(tmp_path):
    params = TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8)
    owner = load_private_key(keygen(tmp_path / "owner")[0])
    other = load_private_key(keygen(tmp_path / "other")[0])
    nonce = new_nonce()
    claim = make_claim(owner, "trigger", "0" * 64,
                       derived_claim_params(owner_reveal(owner, nonce), nonce, params))
    model = _dummy_model(tmp_path)
    ok = save_reveal(tmp_path / "ok.json", owner_reveal(owner, nonce))
    assert verify_claim(model, claim, VerifyOptions(reveal=ok)).evidence["reveal_valid"]
    # Another key's signature over the same context: a well-formed reveal, not this claim's.
    forged = save_reveal(tmp_path / "forged.json", owner_reveal(other, nonce))
    v = verify_claim(model, claim, VerifyOptions(reveal=forged))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is False
    assert "another key" in v.reason


def test_reveal_for_another_claim_rejected(tmp_path):
    params = TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8)
    owner = load_private_key(keygen(tmp_path / "owner")[0])
    n1, n2 = new_nonce(), new_nonce()
    claim2 = make_claim(owner, "trigger", "0" * 64,
                        derived_claim_params(owner_reveal(owner, n2), n2, params))
    first = save_reveal(tmp_path / "first.json", owner_reveal(owner, n1))
    v = verify_claim(_dummy_model(tmp_path), claim2, VerifyOptions(reveal=first))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is False
    assert "another claim" in v.reason


def test_claim_without_key_bound_seed_is_an_error(tmp_path):
    from tests.conftest import one_line_error

    params = TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8)
    owner = load_private_key(keygen(tmp_path / "owner")[0])
    cp = {"kind": "derived", "generator": "ticketmark-trigger-gen/1",
          "trigger": params.to_dict(), "commitment": "0" * 64}
    claim = save_claim(tmp_path / "old.claim.json", make_claim(owner, "trigger", "0" * 64, cp))
    reveal = save_reveal(tmp_path / "r.json", owner_reveal(owner, "x"))
    res = run_cli("verify", "--suspect", _dummy_model(tmp_path), "--claim", claim,
                  "--reveal", reveal)
    assert "not bound to the owner's key" in one_line_error(res)


def test_group_test_is_exact_under_the_null():
    """Labels drawn independently of a (biased) model: p is never below its level."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 5)
    pred = rng.integers(0, 3, 100)  # answers concentrated on three classes
    ps = np.array([group_test(pred, np.repeat(rng.integers(0, 10, 20), 5), groups, 20, 5,
                              10)[1] for _ in range(2000)])
    for level in (0.01, 0.05, 0.2):
        assert (ps <= level).mean() <= level + 0.01
    perfect = np.repeat(rng.integers(0, 10, 20), 5)
    assert group_test(perfect, perfect, groups, 20, 5, 10)[1] == pytest.approx(1e-20)
    # Excluded groups (no queries) count as misses with the widest null law.
    kept = groups < 10
    m, p = group_test(perfect[kept], perfect[kept], groups[kept], 20, 5, 10)
    assert m == 50 and p > group_test(perfect[kept], perfect[kept], groups[kept], 10, 5,
                                      10)[1]


def _dummy_model(tmp_path) -> str:
    """An unmarked digits-shaped model file (conv2, untrained weights)."""
    import torch

    from ticketmark.io import Ticket, save_ticket
    from ticketmark.models import build_model
    from ticketmark.sparsity import Mask, prunable_names

    path = tmp_path / "dummy.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        m = build_model("conv2", 1, 10, 8)
        mask = Mask({n: torch.ones_like(dict(m.named_parameters())[n], dtype=torch.bool)
                     for n in prunable_names(m)})
        from ticketmark.io.ticket import state_of

        save_ticket(path, Ticket("conv2", "digits", 1, 10, 8, state_of(m), mask))
    return str(path)
