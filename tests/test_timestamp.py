"""RFC 3161 time-stamps of claims, against a real TSA (openssl ts -reply) on 127.0.0.1."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms

from tests.conftest import one_line_error, run_cli
from tests.tsa_support import OPENSSL, start_tsa
from ticketmark.ownership.claims import load_claim, make_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.timestamp import (
    check_claim_token,
    check_token,
    load_trust_store,
    timestamp_claim,
    token_path,
)

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    server = start_tsa(tmp_path_factory.mktemp("tsa"), "Trusted")
    yield server
    server.close()


@pytest.fixture(scope="module")
def other_tsa(tmp_path_factory):
    server = start_tsa(tmp_path_factory.mktemp("other_tsa"), "Thief's own")
    yield server
    server.close()


def _claim(folder: Path, name: str, message: str) -> Path:
    priv, _ = keygen(folder / name)
    path = folder / f"{name}.claim.json"
    save_claim(path, make_claim(load_private_key(priv), "signature", "ab" * 32, {"k": 1},
                                message))
    return path


def test_cli_stamps_and_checks_a_claim(tmp_path, tsa):
    claim = _claim(tmp_path, "owner", "ACME")
    res = run_cli("timestamp", "--claim", claim, "--tsa", tsa.url, "--tsa-cert", tsa.ca)
    assert res.returncode == 0, res.stderr
    assert token_path(claim).is_file()
    assert "VALID" in res.stdout and "Trusted TSA" in res.stdout
    # A stored token is checked again without a request.
    again = run_cli("timestamp", "--claim", claim, "--tsa-cert", tsa.ca)
    assert again.returncode == 0 and "VALID" in again.stdout


def test_token_for_another_claim_is_rejected(tmp_path, tsa):
    a, b = _claim(tmp_path, "a", "A"), _claim(tmp_path, "b", "B")
    timestamp_claim(a, tsa.url)
    shutil.copy(token_path(a), token_path(b))
    check = check_claim_token(b, load_trust_store([tsa.ca]))
    assert not check.valid and "message imprint" in check.reason
    res = run_cli("timestamp", "--claim", b, "--tsa-cert", tsa.ca)
    assert res.returncode == 1 and "INVALID" in res.stdout and "another claim" in res.stdout


def test_changed_claim_breaks_its_token(tmp_path, tsa):
    a = _claim(tmp_path, "a", "A")
    timestamp_claim(a, tsa.url)
    obj = load_claim(a)
    obj.body["message"] = "someone else"
    save_claim(a, obj)
    assert not check_claim_token(a, load_trust_store([tsa.ca])).valid


def test_untrusted_tsa_is_rejected(tmp_path, tsa, other_tsa):
    a = _claim(tmp_path, "a", "A")
    timestamp_claim(a, other_tsa.url)
    check = check_claim_token(a, load_trust_store([tsa.ca]))
    assert not check.valid and "untrusted TSA" in check.reason
    assert check_claim_token(a, load_trust_store([other_tsa.ca])).valid


def test_forged_time_is_rejected(tmp_path, tsa):
    """Moving genTime earlier and re-encoding the token breaks the signed digest."""
    a = _claim(tmp_path, "a", "A")
    timestamp_claim(a, tsa.url)
    token = cms.ContentInfo.load(token_path(a).read_bytes())
    encap = token["content"]["encap_content_info"]
    info = encap["content"].parsed
    info["gen_time"] = info["gen_time"].native - timedelta(days=400)
    token["content"]["encap_content_info"] = cms.EncapsulatedContentInfo(
        {"content_type": "tst_info", "content": info})
    forged = token.dump(force=True)
    assert cms.ContentInfo.load(forged)["content"]["encap_content_info"]["content"].parsed[
        "gen_time"].native < datetime.now(UTC) - timedelta(days=300)
    check = check_token(forged, load_claim(a), load_trust_store([tsa.ca]))
    assert not check.valid and "changed after signing" in check.reason


def test_tampered_signature_is_rejected(tmp_path, tsa):
    a = _claim(tmp_path, "a", "A")
    timestamp_claim(a, tsa.url)
    token = cms.ContentInfo.load(token_path(a).read_bytes())
    signer = token["content"]["signer_infos"][0]
    sig = bytearray(signer["signature"].native)
    sig[-5] ^= 0x01
    signer["signature"] = bytes(sig)
    check = check_token(token.dump(force=True), load_claim(a), load_trust_store([tsa.ca]))
    assert not check.valid and "signature" in check.reason


def test_expired_tsa_certificate_is_rejected(tmp_path, tsa):
    from tests.tsa_support import make_pki

    # A TSA whose certificate expired before it signed: openssl signs anyway; we refuse.
    old = start_tsa(tmp_path / "old", "Old")
    try:
        make_pki(old.folder, "Old", tsa_days=3,
                 tsa_start=datetime.now(UTC) - timedelta(days=10))
        a = _claim(tmp_path, "a", "A")
        timestamp_claim(a, old.url)
        check = check_claim_token(a, load_trust_store([old.folder / "ca.pem"]))
        assert not check.valid and "expired" in check.reason
    finally:
        old.close()


def test_bad_inputs_are_one_line_errors(tmp_path, tsa):
    a = _claim(tmp_path, "a", "A")
    one_line_error(run_cli("timestamp", "--claim", a, "--tsa", "ftp://x"))
    one_line_error(run_cli("timestamp", "--claim", a, "--tsa", "http://127.0.0.1:9/",
                           "--timeout", "2"))
    one_line_error(run_cli("timestamp", "--claim", a))
    one_line_error(run_cli("timestamp", "--claim", a, "--tsa-cert", tmp_path / "none.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    one_line_error(run_cli("timestamp", "--claim", a, "--tsa-cert", tmp_path / "junk.pem"))
    assert not token_path(a).exists()
