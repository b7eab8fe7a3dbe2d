"""Outputs a user can trust: nothing overwritten without --force, a verdict never lost to a
bad --report path, secrets owner-only and public artifacts world-readable.

Most cases run the CLI in-process (``main(argv)``, the same entry point as the
``ticketmark`` command) because every refusal happens before any work and a subprocess
costs seconds of imports on a shared machine; the headline cases (keygen, verify
--report) also run as a real subprocess through ``run_cli``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from tests.conftest import one_line_error, run_cli
from ticketmark.cli.main import main


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``ticketmark ARGS`` in this process; return exit code, stdout and stderr."""

    def run(*args: object) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def umask022():
    """Modes are asserted under the common umask 022 (a user's umask may only narrow them)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def owner(tmp_path_factory) -> Path:
    from ticketmark.ownership.keys import keygen

    return keygen(tmp_path_factory.mktemp("owner") / "owner")[0]


@pytest.fixture(scope="module")
def trigger_claim(tmp_path_factory, conv_ticket, owner):
    """A derived trigger claim over conv_ticket (never trained in: verifying it is quick and
    NOT OWNED, which is all these tests need) and its seed file."""
    from ticketmark.data import load_dataset
    from ticketmark.io import load_ticket
    from ticketmark.ownership.claims import make_claim, save_claim
    from ticketmark.ownership.keys import load_private_key
    from ticketmark.ownership.trigger.commitment import (
        derived_claim_params,
        new_nonce,
        owner_reveal,
        save_reveal,
    )
    from ticketmark.ownership.trigger.embed import params_for

    root = tmp_path_factory.mktemp("trigger_claim")
    ticket = load_ticket(conv_ticket)
    key = load_private_key(owner)
    nonce = new_nonce()
    reveal = owner_reveal(key, nonce, [])
    params = params_for(ticket, load_dataset("digits"), 20)
    claim = make_claim(key, "trigger", ticket.fingerprint(),
                       derived_claim_params(reveal, nonce, params), "test owner")
    return save_claim(root / "trigger.claim.json", claim), save_reveal(root / "seed.json",
                                                                         reveal)


# -- keygen: the headline bug (a second keygen silently replaced the private key) ----------


def test_keygen_never_replaces_a_key_without_force(cli, tmp_path, umask022):
    first = run_cli("keygen", "--out", tmp_path / "owner")
    assert first.returncode == 0, first.stderr
    pem, pub = tmp_path / "owner.pem", tmp_path / "owner.pub"
    assert mode(pem) == 0o600 and mode(pub) == 0o644
    old = pem.read_bytes()
    again = run_cli("keygen", "--out", tmp_path / "owner")
    assert "owner.pem exists" in one_line_error(again) and "--force" in again.stderr
    assert pem.read_bytes() == old
    forced = cli("keygen", "--out", tmp_path / "owner", "--force")
    assert forced.returncode == 0, forced.stderr
    assert pem.read_bytes() != old and mode(pem) == 0o600


def test_keygen_api_refuses_too(tmp_path):
    from ticketmark.errors import TicketmarkError
    from ticketmark.ownership.keys import keygen

    keygen(tmp_path / "k")
    (tmp_path / "k.pem").unlink()  # the public half alone still blocks: it names the pair
    with pytest.raises(TicketmarkError, match="exists") as refused:
        keygen(tmp_path / "k")
    # Python is told the Python argument, not the CLI flag
    assert "force=True" in str(refused.value) and "--force" not in str(refused.value)
    import ticketmark as tm

    with pytest.raises(TicketmarkError, match=r"force=True"):
        tm.keygen(tmp_path / "k")
    assert tm.keygen(tmp_path / "k", force=True)[1].is_file()


# -- every other --out ----------------------------------------------------------------------

# (command line, the output file that already exists); {t} ticket, {k} key, {d} tmp folder.
EXISTING_OUTPUTS = [
    ("attack permute --in {t} --out {d}/x", "x.safetensors"),
    ("attack prune --in {t} --ratio 0.3 --out {d}/x", "x.json"),  # the sidecar counts too
    ("attack finetune --in {t} --out {d}/x.safetensors", "x.safetensors"),
    ("attack sweep --in {t} --plan {d}/plan.toml --out {d}/sw", "sw/sweep.md"),
    ("embed --ticket {t} --key {k} --message m --out {d}/x", "x.safetensors"),
    ("embed --ticket {t} --key {k} --message m --out {d}/y --claim {d}/c.json", "c.json"),
    ("trigger embed --ticket {t} --key {k} --out {d}/x", "x.trigger-reveal.json"),
    ("trigger embed --ticket {t} --key {k} --out {d}/z --seed-out {d}/s.json", "s.json"),
    ("trigger embed --ticket {t} --key {k} --out {d}/y --claim-out {d}/c.json", "c.json"),
    ("trigger make --claim {d}/c.json --reveal {d}/r.json --out {d}/set", "set/labels.txt"),
    ("lock --ticket {t} --key-out {d}/new.lock --out {d}/x", "x.safetensors"),
    ("lock --ticket {t} --key-out {d}/old.lock --out {d}/y", "old.lock"),
    ("lock evaluate --ticket {t} --out {d}/ev", "ev/lock_eval.json"),
    ("unlock --ticket {t} --key {d}/none.lock --out {d}/x", "x.safetensors"),
    ("report --run {d}/run --out {d}/rep", "rep/report.html"),
    ("report --run {d}/run", "run/report.md"),
    ("demo --out {d}/run", "run/report.md"),
]


@pytest.mark.parametrize(("line", "existing"), EXISTING_OUTPUTS,
                         ids=[f"{c.split(' --')[0]}:{e}" for c, e in EXISTING_OUTPUTS])
def test_existing_outputs_are_never_overwritten(cli, tmp_path, conv_ticket, owner, line,
                                                existing):
    target = tmp_path / existing
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("the user's earlier result")
    args = line.format(t=conv_ticket, k=owner, d=tmp_path).split()
    res = cli(*args)
    error = one_line_error(res)
    # the file itself is named, or (demo) the folder that holds an earlier run
    named = f"{target} exists" in error or f"{target.parent} exists" in error
    assert named and "--force" in error, error
    assert target.read_text() == "the user's earlier result"
    assert not list(tmp_path.rglob(".*.tmp")), "a temporary file was left behind"


def test_force_overwrites_and_public_outputs_are_world_readable(cli, tmp_path, conv_ticket,
                                                                umask022):
    out = tmp_path / "stolen"
    assert cli("attack", "permute", "--in", conv_ticket, "--out", out, "-q").returncode == 0
    first = (tmp_path / "stolen.safetensors").read_bytes()
    refused = cli("attack", "permute", "--in", conv_ticket, "--out", out, "--seed", "5")
    assert "exists" in one_line_error(refused)
    forced = cli("attack", "permute", "--in", conv_ticket, "--out", out, "--seed", "5",
                 "--force", "-q")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "stolen.safetensors").read_bytes() != first
    assert mode(tmp_path / "stolen.safetensors") == 0o644
    assert mode(tmp_path / "stolen.json") == 0o644


def test_find_resumes_instead_of_refusing(cli, tmp_path, monkeypatch):
    """find's --out is a resumable run directory: the one output that is reused, by design.
    Ctrl-C there says so."""
    from ticketmark.cli import find as find_cli

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(find_cli, "finder", lambda method: interrupted)
    res = cli("find", "--model", "conv2", "--dataset", "digits", "--out", tmp_path / "run")
    assert res.returncode == 130
    assert "run the same command again to resume" in res.stderr


# -- verify / dispute --report: the verdict comes first -------------------------------------


def test_verify_report_to_an_existing_file_prints_the_verdict_then_fails(
        tmp_path, conv_ticket, trigger_claim, owner):
    claim, seed = trigger_claim
    pub = owner.with_suffix(".pub")
    before = pub.read_bytes()
    res = run_cli("verify", "--suspect", conv_ticket, "--claim", claim, "--reveal", seed,
                  "--report", pub)
    error = one_line_error(res)
    assert "is a file, not a folder" in error and "not saved" in error
    assert res.stdout.startswith("trigger: NOT OWNED"), res.stdout  # the verdict survived
    assert pub.read_bytes() == before


def test_verify_report_is_not_overwritten_without_force(cli, tmp_path, conv_ticket,
                                                        trigger_claim, umask022):
    claim, seed = trigger_claim
    args = ["verify", "--suspect", conv_ticket, "--claim", claim, "--reveal", seed,
            "--report", tmp_path / "verdicts"]
    first = cli(*args)
    assert first.returncode == 1, first.stderr  # NOT OWNED: these triggers were never trained
    report = tmp_path / "verdicts" / "verdict_trigger.json"
    assert mode(report) == 0o644 and mode(report.with_name("trigger_confusion.png")) == 0o644
    report.write_text("an earlier verdict")
    again = cli(*args)
    assert "trigger: NOT OWNED" in again.stdout
    assert f"{report} exists" in one_line_error(again)
    assert report.read_text() == "an earlier verdict"
    assert cli(*args, "--force").returncode == 1
    assert '"status": "NOT OWNED"' in report.read_text()


def test_dispute_report_to_a_file_keeps_the_decision(cli, tmp_path, conv_ticket,
                                                     trigger_claim):
    claim, seed = trigger_claim
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    res = cli("dispute", "--model", conv_ticket, "--claim", claim, "--claim", claim,
              "--reveal-a", seed, "--reveal-b", seed, "--report", blocker)
    assert "claim A" in res.stdout and ("UNDECIDED" in res.stdout or "WINNER" in res.stdout)
    assert "is a file, not a folder" in one_line_error(res)


def test_verify_names_a_file_that_is_not_a_ticket(cli, owner, trigger_claim):
    res = cli("verify", "--suspect", owner, "--claim", trigger_claim[0], "--reveal",
              trigger_claim[1])
    error = one_line_error(res)
    # named as given, with no ticket suffix glued on (it cannot be run as a model)
    assert f"{owner}:" in error and ".pem.safetensors" not in error


def test_verify_help_shows_each_schemes_threshold(cli):
    from ticketmark.ownership.signature.verify import DEFAULT_THRESHOLD as SIG
    from ticketmark.ownership.trigger.stats import DEFAULT_THRESHOLD as TRIG

    text = " ".join(cli("verify", "--help").stdout.split())
    found = re.search(r"default: (\S+) for a signature, (\S+) for a trigger set", text)
    assert found, text
    assert (float(found[1]), float(found[2])) == (SIG, TRIG)


# -- file modes: secrets owner-only, public artifacts world-readable ------------------------


def test_secrets_are_owner_only_and_public_files_world_readable(tmp_path, conv_ticket,
                                                                umask022):
    from ticketmark.io import load_ticket, save_ticket
    from ticketmark.ownership.claims import make_claim, save_claim
    from ticketmark.ownership.keys import keygen, load_private_key
    from ticketmark.ownership.lock import lock_ticket, write_key
    from ticketmark.ownership.lock.choosers import ChooserContext, choose
    from ticketmark.ownership.trigger.commitment import owner_reveal, save_reveal
    from ticketmark.report.page import render_report

    priv, pub = keygen(tmp_path / "owner")
    ticket = load_ticket(conv_ticket)
    locked, key = lock_ticket(ticket, choose(ChooserContext(ticket), "omp", weights=20)
                              .take(20))
    secrets = [priv, write_key(tmp_path / "owner.lock", key),
               save_reveal(tmp_path / "trigger.seed.json",
                           owner_reveal(load_private_key(priv), "n", []))]
    claim = make_claim(load_private_key(priv), "trigger", ticket.fingerprint(), {}, "m")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text('{"title": "t", "sections": []}')
    public = [pub, save_ticket(tmp_path / "locked", locked), tmp_path / "locked.json",
              save_claim(tmp_path / "c.claim.json", claim), *render_report(tmp_path / "run")]
    assert {p.name: oct(mode(p)) for p in secrets} == {p.name: "0o600" for p in secrets}
    assert {p.name: oct(mode(p)) for p in public} == {p.name: "0o644" for p in public}


def test_a_stricter_umask_narrows_public_files(tmp_path):
    from ticketmark.io import atomic_write_text

    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "public.txt", "x")
        atomic_write_text(tmp_path / "secret.txt", "x", secret=True)
    finally:
        os.umask(old)
    assert mode(tmp_path / "public.txt") == 0o600 and mode(tmp_path / "secret.txt") == 0o600
