"""The whole story through the CLI: demo --fast, its verdicts, forgeries, report, dispute."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    res = run_cli("demo", "--fast", "--out", out, "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_demo_verifies_stolen_copies(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    rows = {(r["attack"], r["strength"]): r for r in summary["robustness"]}
    assert rows[("stolen as released", "-")]["signature"] == "OWNED"
    assert rows[("stolen as released", "-")]["trigger"] == "OWNED"
    # A permuted copy: the signature can only be read in a frame the claimant supplies
    # (fingerprints, reference), which is no evidence; the trigger set still answers.
    assert rows[("permute channels", "all layers")]["signature"] == "NOT OWNED"
    assert rows[("permute channels", "all layers")]["trigger"] == "OWNED"
    assert rows[("quantize", "int8")]["signature"] == "OWNED"
    assert rows[("quantize", "int8")]["trigger"] == "OWNED"
    assert all(r["lock"].startswith("locked") for r in summary["robustness"])
    assert summary["owner"]["trigger_acc"] >= 90.0


def test_demo_rejects_every_forgery_and_false_claim(demo_run):
    forgeries = json.loads((demo_run / "summary.json").read_text())["forgeries"]
    assert len(forgeries) == 5
    for f in forgeries:
        assert f["outcome"] == "rejected / owner wins", f


def test_dispute_cli_names_the_owner(demo_run):
    forge = demo_run / "forgeries"
    res = run_cli("dispute", "--model", forge / "thief_signed.safetensors",
                  "--claim", demo_run / "owner" / "signature.claim.json",
                  "--claim", forge / "thief_signature.claim.json",
                  "--reference-a", demo_run / "owner" / "ticket.safetensors",
                  "--reference-b", forge / "thief_signed.safetensors")
    assert res.returncode == 0, res.stderr
    assert "WINNER: claim A" in res.stdout
    swapped = run_cli("dispute", "--model", forge / "thief_signed.safetensors",
                      "--claim", forge / "thief_signature.claim.json",
                      "--claim", demo_run / "owner" / "signature.claim.json",
                      "--reference-a", forge / "thief_signed.safetensors",
                      "--reference-b", demo_run / "owner" / "ticket.safetensors")
    assert "WINNER: claim B" in swapped.stdout, swapped.stdout


def test_dispute_needs_two_claims(demo_run):
    res = run_cli("dispute", "--model", demo_run / "release" / "ticket.safetensors",
                  "--claim", demo_run / "owner" / "signature.claim.json")
    assert res.returncode == 2 and res.stderr.startswith("error: give exactly two")


def test_report_is_self_contained(demo_run, tmp_path):
    res = run_cli("report", "--run", demo_run, "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert "Robustness" in page and "<table>" in page
    assert 'src="http' not in page  # nothing fetched from elsewhere
    md = (tmp_path / "report.md").read_text()
    assert "| attack |" in md


def test_report_without_run_fails_cleanly(tmp_path):
    res = run_cli("report", "--run", tmp_path)
    assert res.returncode == 2 and "no report.json" in res.stderr


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium) — skipping the "
                    "browser rendering test")
    shot = tmp_path / "report.png"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         (demo_run / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "Robustness" in dom.stdout and "<img" in dom.stdout
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile2'}",
         f"--screenshot={shot}", "--window-size=1200,2400", (demo_run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100, "screenshot is blank"
    colours = len(set(img.resize((200, 400)).getdata()))
    assert colours > 20, "screenshot has almost no content"


def test_forgery_outcome_names_who_holds():
    from ticketmark.demo.forgeries import outcome_row

    assert outcome_row("f", True, True, "")["outcome"] == "rejected / owner wins"
    # A rejected forgery on a copy where the owner's claim fails too is no success...
    neither = outcome_row("f", True, False, "")["outcome"]
    assert neither.startswith("rejected") and "owner's claim does not hold" in neither
    # ...and only a forged claim that holds is one.
    assert outcome_row("f", False, False, "")["outcome"] == "FORGERY SUCCEEDED"
