"""``ticketmark lock`` / ``unlock`` as a user runs them: round trip and every refusal."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import one_line_error as _one_line_error
from tests.conftest import run_cli
from ticketmark.io import load_ticket

PASS = {"OWNER_PASS": "a long owner passphrase"}


@pytest.fixture(scope="module")
def locked(resnet_ticket, tmp_path_factory):
    """resnet_ticket locked with ewp + add-back, key encrypted to a passphrase."""
    d = tmp_path_factory.mktemp("locked")
    res = run_cli("lock", "--ticket", resnet_ticket, "--method", "ewp", "--paths", "40",
                  "--add-back", "--key-out", d / "owner.lock", "--passphrase-env",
                  "OWNER_PASS", "--out", d / "locked", env=PASS)
    assert res.returncode == 0, res.stderr
    assert "encrypted" in res.stdout
    return d


def test_lock_unlock_round_trip_is_bit_identical(locked, resnet_ticket, tmp_path):
    original, lk = load_ticket(resnet_ticket), load_ticket(locked / "locked.safetensors")
    assert lk.mask.layer_counts() == original.mask.layer_counts()
    assert lk.fingerprint() != original.fingerprint()
    res = run_cli("unlock", "--ticket", locked / "locked.safetensors", "--key",
                  locked / "owner.lock", "--passphrase-env", "OWNER_PASS", "--out",
                  tmp_path / "back", env=PASS)
    assert res.returncode == 0, res.stderr
    back = load_ticket(tmp_path / "back")
    assert back.fingerprint() == original.fingerprint()
    for k in original.state:
        a, b = original.state[k].reshape(-1), back.state[k].reshape(-1)
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), k
    for k in original.mask:
        assert torch.equal(original.mask[k], back.mask[k])
    assert (tmp_path / "back.safetensors").read_bytes() == resnet_ticket.read_bytes()


def test_unlock_refusals_write_nothing(locked, resnet_ticket, tmp_path):
    key, lk = locked / "owner.lock", locked / "locked.safetensors"
    out = tmp_path / "never"
    wrong = run_cli("unlock", "--ticket", lk, "--key", key, "--passphrase-env", "OWNER_PASS",
                    "--out", out, env={"OWNER_PASS": "guess"})
    assert "wrong passphrase" in _one_line_error(wrong)
    cut = tmp_path / "cut.lock"
    cut.write_bytes(key.read_bytes()[:-100])
    truncated = run_cli("unlock", "--ticket", lk, "--key", cut, "--passphrase-env",
                        "OWNER_PASS", "--out", out, env=PASS)
    assert "truncated" in _one_line_error(truncated)
    # the original (unlocked) ticket is another ticket as far as this key is concerned
    other = run_cli("unlock", "--ticket", resnet_ticket, "--key", key, "--passphrase-env",
                    "OWNER_PASS", "--out", out, env=PASS)
    assert "belongs to another ticket" in _one_line_error(other)
    assert not list(tmp_path.glob("never*"))


def test_lock_refusals_write_nothing(resnet_ticket, tmp_path):
    key, out = tmp_path / "k.lock", tmp_path / "out"
    res = run_cli("lock", "--ticket", resnet_ticket, "--method", "magic", "--key-out", key,
                  "--out", out)
    assert "unknown chooser" in _one_line_error(res)
    res = run_cli("lock", "--ticket", resnet_ticket, "--key-out", key, "--out", out,
                  "--passphrase-env", "TICKETMARK_NO_SUCH_VAR")
    assert "not set" in _one_line_error(res)
    assert not list(tmp_path.iterdir())
    # A ticket with no pruned position left cannot take an add-back: the error says what to do.
    from dataclasses import replace

    from ticketmark.io import save_ticket
    from ticketmark.sparsity import Mask

    t = load_ticket(resnet_ticket)
    full = Mask({n: torch.ones_like(m) for n, m in t.mask.items()})
    state = {**t.state, **{n: torch.where(t.state[n] == 0, 0.01, t.state[n]) for n in full}}
    dense = save_ticket(tmp_path / "in" / "dense", replace(t, state=state, mask=full))
    res = run_cli("lock", "--ticket", dense, "--method", "ewp", "--paths", "50",
                  "--add-back", "--key-out", key, "--out", out)
    err = _one_line_error(res)
    assert "too few to add back" in err and "without --add-back" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.slow
def test_lock_evaluate_writes_table_and_plot(resnet_ticket, tmp_path):
    res = run_cli("lock", "evaluate", "--ticket", resnet_ticket, "--out", tmp_path,
                  "--methods", "ewp,omp", "--sizes", "1,5", "--forge-sizes", "5",
                  "--epochs", "1", timeout=900)
    assert res.returncode == 0, res.stderr
    for name in ("lock_eval.csv", "lock_eval.md", "lock_eval.json", "lock_eval.png"):
        assert (tmp_path / name).stat().st_size > 0
    csv = (tmp_path / "lock_eval.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 and "True" in csv[1]
    assert "Smallest key" in res.stdout
