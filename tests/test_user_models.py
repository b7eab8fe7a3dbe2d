"""The user's own model and data (import strings), and the rule that files never import code.

``tests/user_code.py`` holds a MobileNetV2-style depthwise-separable network and a
3-channel 32x32 dataset written the way a user would; ticketmark has never seen either.
"""

from __future__ import annotations

import math

import pytest

import ticketmark as tm
from tests.conftest import one_line_error, run_cli
from tests.user_code import MobileNet
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.sparsity import Mask

MODEL = "tests.user_code:mobilenet"
DATA = "tests.user_code:rgb32"
MARKER = "tests.user_code:marker"


def _marker_ticket(tmp_path) -> str:
    model = MobileNet()
    names = [n for n, p in model.named_parameters() if p.dim() == 4]
    t = Ticket(MARKER, DATA, 3, 10, 32, state_of(model), Mask.from_weights(model, names),
               None, {})
    return str(save_ticket(tmp_path / "named", t))


def test_a_sidecar_never_imports_code_the_user_did_not_name(tmp_path):
    """A ticket whose sidecar names a module (here one that writes a marker file when it
    runs) is refused with one line unless the user names that code or passes
    --trust-model-code; then it runs."""
    path = _marker_ticket(tmp_path)
    marker = tmp_path / "marker"
    env = {"TICKETMARK_TEST_MARKER": str(marker)}
    # The data is named on the command line (so trusted); the model only in the sidecar.
    res = run_cli("attack", "prune", "--in", path, "--ratio", "0.3", "--dataset", DATA,
                  "--out", tmp_path / "out", env=env, fork=False)
    err = one_line_error(res)
    assert "--trust-model-code" in err and MARKER in err
    assert not marker.exists()
    with pytest.raises(TicketmarkError, match="imports code only when you name it"):
        load_ticket(path).build()
    ok = run_cli("--trust-model-code", "attack", "prune", "--in", path, "--ratio", "0.3",
                 "--out", tmp_path / "out", env=env, fork=False)
    assert ok.returncode == 0, ok.stderr
    assert marker.read_text() == "imported"


def test_import_strings_are_checked_before_anything_runs(tmp_path):
    res = run_cli("find", "--model", "bad-module:fn", "--dataset", "digits",
                  "--out", tmp_path / "x")
    assert "import string" in one_line_error(res)
    res = run_cli("find", "--model", "tests.user_code:no_such_factory", "--dataset",
                  "digits", "--out", tmp_path / "y")
    assert "no_such_factory" in one_line_error(res)


@pytest.mark.slow
def test_every_scheme_on_the_users_mobilenet(tmp_path):
    """find (IMP, 2 rounds) -> embed (QR in a pointwise layer, --min-entries 1) -> trigger
    embed -> lock/unlock -> attacks -> verify, on the user's network and data; the same
    claims on an independently trained instance read NOT OWNED."""
    run = tmp_path / "run"
    res = run_cli("find", "--model", MODEL, "--dataset", DATA, "--rounds", "2", "--rate",
                  "0.3", "--rewind-epoch", "1", "--epochs", "4", "--batch-size", "32",
                  "--lr", "0.05", "--out", run, timeout=900)
    assert res.returncode == 0, res.stderr
    ticket = load_ticket(run)
    assert ticket.model_name == MODEL and ticket.in_channels == 3 and ticket.image_size == 32
    key = tmp_path / "owner"
    assert run_cli("keygen", "--out", key).returncode == 0
    # Commands that read a ticket import the code its sidecar names only when told to.
    trusted = ("--trust-model-code",)
    res = run_cli(*trusted, "embed", "--ticket", run, "--key", f"{key}.pem", "--message",
                  "me", "--min-entries", "1", "--epochs", "2", "--out", tmp_path / "signed",
                  "--claim", tmp_path / "sig.claim.json", timeout=900)
    assert res.returncode == 0, res.stderr
    res = run_cli(*trusted, "trigger", "embed", "--ticket", tmp_path / "signed.safetensors",
                  "--key", f"{key}.pem", "--epochs", "2", "--out", tmp_path / "release",
                  "--claim-out", tmp_path / "trig.claim.json", "--reveal-out",
                  tmp_path / "trig.reveal.json", timeout=900)
    assert res.returncode == 0, res.stderr
    release = tmp_path / "release.safetensors"
    for args in (("lock", "--ticket", release, "--method", "ewp", "--paths", "20",
                  "--key-out", tmp_path / "owner.lock", "--out", tmp_path / "locked"),
                 ("unlock", "--ticket", tmp_path / "locked.safetensors", "--key",
                  tmp_path / "owner.lock", "--out", tmp_path / "restored")):
        res = run_cli(*trusted, *args, timeout=600)
        assert res.returncode == 0, res.stderr
    tm.trust_model_code(MODEL)
    restored, released = load_ticket(tmp_path / "restored"), load_ticket(release)
    assert all((restored.state[k] == released.state[k]).all() for k in released.state)
    # Attacks: int8 and 10% more pruning keep the QR (its dark modules are single weights
    # in a pointwise layer, so heavier pruning erases them: measured in the closing note);
    # a permutation keeps the trigger set.
    for attack, extra in (("quantize", ("--scheme", "int8")), ("prune", ("--ratio", "0.1")),
                          ("permute", ())):
        res = run_cli(*trusted, "attack", attack, "--in", release, *extra, "--out",
                      tmp_path / attack, timeout=600)
        assert res.returncode == 0, res.stderr
    for copy in (release, tmp_path / "quantize.safetensors", tmp_path / "prune.safetensors"):
        v = tm.verify(str(copy), str(tmp_path / "sig.claim.json"))
        print(copy.name, v.status, v.p_value, v.evidence.get("agree"))
        assert v.status == "OWNED", (copy.name, v.reason)
    permuted = load_ticket(tmp_path / "permute").build()
    t = tm.verify(permuted, str(tmp_path / "trig.claim.json"),
                  reveal=str(tmp_path / "trig.reveal.json"))
    assert t.status == "OWNED", t.reason
    # An independent instance of the same architecture on the same data.
    other = tmp_path / "other"
    res = run_cli("find", "--model", MODEL, "--dataset", DATA, "--rounds", "1", "--rate",
                  "0.5", "--epochs", "3", "--batch-size", "32", "--lr", "0.05", "--seed",
                  "9", "--out", other, timeout=900)
    assert res.returncode == 0, res.stderr
    v = tm.verify(str(other / "ticket.safetensors"), str(tmp_path / "sig.claim.json"))
    t = tm.verify(load_ticket(other).build(), str(tmp_path / "trig.claim.json"),
                  reveal=str(tmp_path / "trig.reveal.json"))
    assert v.status == "NOT OWNED" and t.status == "NOT OWNED", (v.reason, t.reason)
    assert math.isfinite(v.p_value)
