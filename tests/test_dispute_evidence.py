"""Issue 21 end to end: the thief who erases the owner's QR block, and the framer.

The owner signs a ticket and time-stamps the claim at a TSA both sides trust (a real one,
``openssl ts -reply`` on 127.0.0.1). The thief re-randomises the owner's block in the
release (the overwritten copy), then signs it with his own key (``embed`` retrains from
the owner's rewind weights) and time-stamps his claim too, later. ``dispute`` must name the
owner on both copies; without trusted time it cannot, and says why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.dispute_support import overwrite_block, plant_code
from tests.test_derive import _stranger
from tests.tsa_support import OPENSSL, start_tsa
from ticketmark.io import load_ticket, save_ticket
from ticketmark.ownership.claims import load_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import EmbedOptions, embed_signature
from ticketmark.ownership.timestamp import timestamp_claim, token_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")]


@pytest.fixture(scope="module")
def scene(tmp_path_factory, resnet_ticket):
    d = tmp_path_factory.mktemp("scene")
    tsa = start_tsa(d / "tsa", "Trusted")
    thief_tsa = start_tsa(d / "thief_tsa", "Thief's own")
    owner_priv, _ = keygen(d / "owner")
    signed = embed_signature(load_ticket(resnet_ticket), load_private_key(owner_priv),
                             "ACME vision team", EmbedOptions(epochs=1, progress=False))
    save_ticket(d / "release", signed.ticket)
    save_claim(d / "owner.claim.json", signed.claim)
    timestamp_claim(d / "owner.claim.json", tsa.url)  # before release
    # The thief: erase the owner's block, then sign with his own key (and stamp, later).
    save_ticket(d / "overwritten", overwrite_block(signed.ticket, signed.claim))
    thief_priv, _ = keygen(d / "thief")
    res = run_cli("embed", "--ticket", d / "overwritten.safetensors", "--key", thief_priv,
                  "--message", "thief", "--epochs", "1", "--out", d / "thief_signed",
                  "--claim", d / "thief.claim.json", "--tsa", tsa.url, "-q")
    assert res.returncode == 0, res.stderr
    assert token_path(d / "thief.claim.json").is_file()
    yield {"dir": d, "tsa": tsa, "thief_tsa": thief_tsa}
    tsa.close()
    thief_tsa.close()


def _dispute(d: Path, model: str, *extra: str | Path):
    return run_cli("dispute", "--model", d / model, "--claim", d / "owner.claim.json",
                   "--claim", d / "thief.claim.json", "--reference-a", d / "release.safetensors",
                   "--reference-b", d / "thief_signed.safetensors", *extra)


def test_thief_wins_the_credentials_but_not_the_dispute(scene):
    d, tsa = scene["dir"], scene["tsa"]
    res = _dispute(d, "thief_signed.safetensors", "--tsa-cert", tsa.ca, "--report", d / "r1")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    # The credentials alone favour the thief: his code verifies, the owner's was erased.
    assert "claim A (" in out and "claim B (" in out
    assert "WINNER: claim A" in out and "time-stamped first" in out
    report = json.loads((d / "r1" / "dispute.json").read_text())
    assert report["winner"] == "A"
    assert report["verdicts"][0]["status"] != "OWNED"
    assert report["verdicts"][1]["status"] == "OWNED"
    deriv = report["derivation"]
    assert deriv["model from A's reference"]["derived"]
    assert deriv["B's reference from A's reference"]["derived"]
    assert [t["valid"] for t in report["timestamps"]] == [True, True]
    assert report["timestamps"][0]["time"] < report["timestamps"][1]["time"]


def test_overwritten_copy_goes_to_the_owner(scene):
    d, tsa = scene["dir"], scene["tsa"]
    res = _dispute(d, "overwritten.safetensors", "--tsa-cert", tsa.ca, "--report", d / "r2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WINNER: claim A" in res.stdout
    report = json.loads((d / "r2" / "dispute.json").read_text())
    assert report["winner"] == "A"
    assert not any(v["status"] == "OWNED" for v in report["verdicts"])  # no code holds


def test_without_trusted_time_the_dispute_is_undecided(scene):
    d = scene["dir"]
    res = _dispute(d, "thief_signed.safetensors")
    assert res.returncode == 1
    assert "UNDECIDED" in res.stdout and "--tsa-cert" in res.stdout


def test_token_from_an_untrusted_tsa_does_not_count(scene, tmp_path):
    """The thief stamps a copy of his claim at his own TSA *before* the owner's time would
    matter; nobody trusts that TSA, so only the owner's time counts."""
    d, tsa, own = scene["dir"], scene["tsa"], scene["thief_tsa"]
    thief_claim = tmp_path / "thief.claim.json"
    shutil.copy(d / "thief.claim.json", thief_claim)
    timestamp_claim(thief_claim, own.url)
    res = run_cli("dispute", "--model", d / "thief_signed.safetensors",
                  "--claim", d / "owner.claim.json", "--claim", thief_claim,
                  "--reference-a", d / "release.safetensors",
                  "--reference-b", d / "thief_signed.safetensors", "--tsa-cert", tsa.ca)
    assert res.returncode == 0, res.stdout
    assert "WINNER: claim A" in res.stdout and "untrusted TSA" in res.stdout


def test_token_for_another_claim_does_not_count(scene, tmp_path):
    d, tsa = scene["dir"], scene["tsa"]
    res = _dispute(d, "thief_signed.safetensors", "--tsa-cert", tsa.ca,
                   "--token-b", token_path(d / "owner.claim.json"))
    assert res.returncode == 0 and "WINNER: claim A" in res.stdout
    assert "another claim" in res.stdout


def test_framing_carries_the_code_not_derived(scene, tmp_path):
    """The owner's public code drawn into a model the owner never made."""
    d = scene["dir"]
    claim = load_claim(d / "owner.claim.json")
    owner = load_ticket(d / "release.safetensors")
    save_ticket(tmp_path / "framed", plant_code(_stranger(owner, 11), claim))
    plain = run_cli("verify", "--suspect", tmp_path / "framed.safetensors", "--claim",
                    d / "owner.claim.json")
    assert plain.returncode == 0 and "OWNED" in plain.stdout  # the code alone is there
    res = run_cli("verify", "--suspect", tmp_path / "framed.safetensors", "--claim",
                  d / "owner.claim.json", "--reference", d / "release.safetensors")
    assert res.returncode == 1
    assert "carries the code, not derived" in res.stdout
    assert "derived: NOT DERIVED" in res.stdout
    # The owner's own release with the same reference: owned and derived.
    ok = run_cli("verify", "--suspect", d / "release.safetensors", "--claim",
                 d / "owner.claim.json", "--reference", d / "release.safetensors")
    assert ok.returncode == 0 and "derived from the reference" in ok.stdout
