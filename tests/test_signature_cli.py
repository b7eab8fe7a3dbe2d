"""``ticketmark embed`` / ``verify`` for signature claims, as a user runs them."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.test_cli import _one_line_error
from tests.test_signature import owner_key, signed  # noqa: F401 - module fixtures


def test_verify_cli_owned_and_not_owned(signed, resnet_ticket, tmp_path):  # noqa: F811
    res = run_cli("verify", "--suspect", signed["path"], "--claim", signed["claim"],
                  "--report", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    assert "signature: OWNED" in res.stdout and "decode: raw" in res.stdout
    assert "p_rowcol" not in res.stdout and "more fields with --verbose" in res.stdout
    report = json.loads((tmp_path / "rep" / "verdict_signature.json").read_text())
    assert report["status"] == "OWNED" and report["pictures"]
    assert (tmp_path / "rep" / "signature.png").exists()
    assert report["evidence"]["search_null"] == {"skipped": "the claimed tag decoded"}
    res = run_cli("verify", "--suspect", signed["path"], "--claim", signed["claim"],
                  "--full-evidence", "--report", tmp_path / "full")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "full" / "verdict_signature.json").read_text())
    assert report["evidence"]["search_null"]["claimed_agreement"] == 208
    res = run_cli("verify", "--suspect", resnet_ticket, "--claim", signed["claim"], "--search",
                  "--verbose")
    assert res.returncode == 1, res.stderr
    assert "signature: NOT OWNED" in res.stdout and "p_rowcol" in res.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["embed", "--ticket", "{ticket}", "--key", "{key}", "--message", "m", "--layer",
          "layer1.0.conv1.weight", "--out", "{tmp}/o"], "too small"),
        (["verify", "--suspect", "{ticket}", "--claim", "{claim}", "--threshold", "2"],
         "threshold"),
        (["verify", "--suspect", "{ticket}", "--claim", "{badclaim}"],
         "lacks a valid 'layer'"),
    ],
)
def test_cli_bad_input(args, needle, signed, tmp_path):  # noqa: F811
    claim = json.loads(signed["claim"].read_text())
    del claim["claim"]["params"]["layer"]
    bad = tmp_path / "bad.claim.json"
    bad.write_text(json.dumps(claim))
    fmt = {"tmp": tmp_path, "ticket": signed["path"], "claim": signed["claim"],
           "badclaim": bad, "key": signed["key"]}
    res = run_cli(*[a.format(**fmt) for a in args])
    assert needle in _one_line_error(res)
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.slow
def test_embed_cli_retrains_and_verifies(resnet_ticket, tmp_path):
    assert run_cli("keygen", "--out", tmp_path / "owner").returncode == 0
    res = run_cli("embed", "--ticket", resnet_ticket, "--key", tmp_path / "owner.pem",
                  "--message", "ACME vision team", "--out", tmp_path / "signed", "--epochs",
                  "2", "-q")
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout
    claim = tmp_path / "signed.signature.claim.json"
    res = run_cli("verify", "--suspect", tmp_path / "signed.safetensors", "--claim", claim)
    assert res.returncode == 0, res.stdout + res.stderr
    # A second signer (a thief with ticketmark) is told, and the owner's code survives.
    assert run_cli("keygen", "--out", tmp_path / "thief").returncode == 0
    res = run_cli("embed", "--ticket", tmp_path / "signed.safetensors", "--key",
                  tmp_path / "thief.pem", "--message", "mine", "--out", tmp_path / "thief",
                  "--epochs", "1", "-q")
    assert res.returncode == 0, res.stderr
    assert "a QR code was already drawn in" in res.stderr
    res = run_cli("verify", "--suspect", tmp_path / "thief.safetensors", "--claim", claim)
    assert res.returncode == 0 and "tag decoded" in res.stdout, res.stdout + res.stderr
