"""Hostile input, one regression test per case of issue 17 (items 1-7).

Each case is something a thief (or the other side of a dispute) controls: a suspect's
sidecar and mask, a claim, an endpoint's answers, a report folder, a key file. The
expected outcome is always a verdict or one ``error:`` line with exit 2, in bounded time
and memory, with no half-written output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import one_line_error, run_cli
from tests.hostile_support import (
    HostileServer,
    cli,
    copy_ticket,
    edit_sidecar,
    send,
    trigger_claim,
)
from ticketmark.io import load_ticket, save_ticket

# -- item 1: report.json names files outside the run folder --------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
    "rkJggg==")


def _report_run(root: Path, image_path: str) -> Path:
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "ok.png").write_bytes(PNG)
    report = {"title": "t", "sections": [{"title": "s", "images": [
        {"path": "ok.png", "caption": "fine"}, {"path": image_path, "caption": "x"}]}]}
    (run / "report.json").write_text(json.dumps(report))
    return run


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink", "not_png"])
def test_report_embeds_only_pngs_inside_the_run(tmp_path, where):
    secret = tmp_path / "owner.pem"
    secret.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    image = {"parent": "../owner.pem", "absolute": str(secret), "symlink": "link.png",
             "not_png": "fake.png"}[where]
    run = _report_run(tmp_path, image)
    if where == "symlink":
        (run / "link.png").symlink_to(secret)
    if where == "not_png":
        (run / "fake.png").write_text("a text file named .png")
    res = cli("report", "--run", run)
    line = res.one_error()
    # Each case its own refusal: a path leaving the folder must be refused as such, before
    # the file is read (the owner's key is not a PNG either, so "not a PNG" would hide it).
    expected = "not a PNG" if where == "not_png" else "outside the run folder"
    assert expected in line, line
    assert not (run / "report.html").exists() and not (run / "report.md").exists()


def test_report_cli_refuses_and_still_renders_a_good_run(tmp_path):
    run = _report_run(tmp_path, "../../../../../../etc/passwd")
    line = one_line_error(run_cli("report", "--run", run))
    assert "outside the run folder" in line
    assert not (run / "report.html").exists()
    report = json.loads((run / "report.json").read_text())
    report["sections"][0]["images"].pop()  # only the run's own PNG left
    (run / "report.json").write_text(json.dumps(report))
    res = cli("report", "--run", run)
    assert res.code == 0, res.err
    assert base64.b64encode(PNG).decode() in (run / "report.html").read_text()


@pytest.mark.parametrize("report", [
    {"title": "t", "sections": 5},
    {"title": "t", "sections": [{"title": "s", "images": [{"path": 7}]}]},
    {"title": ["x"], "sections": []},
    [1, 2],
])
def test_malformed_report_json_is_one_error(tmp_path, report):
    (tmp_path / "report.json").write_text(json.dumps(report))
    line = cli("report", "--run", tmp_path).one_error()
    # the error is about this report.json (a folder without one also exits 2 in one line)
    assert f"{tmp_path / 'report.json'}" in line, line
    assert not (tmp_path / "report.html").exists()


# -- items 2-4: a hostile endpoint ---------------------------------------------------------

def _verify_endpoint(url: str, root: Path, *extra: str):
    claim, seed = trigger_claim(root)
    return cli("verify", "--suspect", url, "--claim", claim, "--reveal", seed,
               "--batch-size", "100", *extra)


def test_drip_feeding_endpoint_hits_the_deadline(tmp_path):
    """One byte every 0.4 s never trips the 2 s per-read timeout; the deadline ends it."""
    def drip(handler, n):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(150):  # at most 60 s, even if the client never gave up
            if server.stopped.is_set():
                return
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.4)

    with HostileServer(drip) as server:
        res = _verify_endpoint(server.url, tmp_path, "--timeout", "2", "--deadline", "3")
    assert res.code == 1, res.err
    assert "COULD NOT VERIFY" in res.out and "deadline of 3 s" in res.out, res.out
    assert 1 <= server.hits <= 3  # one request, or a few retries on a very slow machine


def test_redirect_to_another_origin_is_not_followed(tmp_path):
    """A 302 elsewhere would be re-sent as a GET without inputs to a server nobody named."""
    def other_origin(handler, n):
        send(handler, 200, json.dumps({"labels": [0] * 100}).encode())

    with HostileServer(other_origin) as other:
        def redirect(handler, n):
            send(handler, 302, b"", {"Location": other.url})

        with HostileServer(redirect) as server:
            res = _verify_endpoint(server.url, tmp_path, "--timeout", "5")
        assert other.hits == 0
    assert res.code == 1
    assert "COULD NOT VERIFY" in res.out and "redirect" in res.out, res.out


@pytest.mark.parametrize(("answer", "needle"), [
    (lambda n: json.dumps({"labels": [10**30] * n}), "outside 0..9"),
    (lambda n: '{"labels": [' + "7" * 5000 + "]}", "malformed JSON"),
    (lambda n: '{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    (lambda n: json.dumps({"labels": [-(2**70)] * n}), "outside 0..9"),
], ids=["huge-int", "5000-digits", "nested", "negative-huge"])
def test_hostile_answers_could_not_verify(tmp_path, answer, needle):
    def hostile(handler, n):
        send(handler, 200, answer(n).encode())

    with HostileServer(hostile) as server:
        res = _verify_endpoint(server.url, tmp_path, "--timeout", "5")
    res.assert_verdict_or_error()
    assert res.code == 1 and "COULD NOT VERIFY" in res.out and needle in res.out, res.out
    assert server.hits == 1  # a malformed answer is final, not retried


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/predict",
                                 "http://a b/predict"])
def test_malformed_endpoint_url_is_one_error(tmp_path, url):
    claim, seed = trigger_claim(tmp_path)
    line = cli("verify", "--suspect", url, "--claim", claim, "--reveal", seed).one_error()
    assert "URL" in line


# -- item 4: hostile sidecars and claims ---------------------------------------------------

@pytest.mark.parametrize(("field", "value", "needle"), [
    ("num_classes", -1, "num_classes"),
    ("num_classes", 10**12, "num_classes"),
    ("in_channels", 10**9, "in_channels"),
    ("num_classes", 999_999, "shape"),  # in range: the file's tensors refuse it
    ("num_classes", "10", "integer"),
    ("metrics", "oops", "metrics"),
    ("metrics", [{"test_acc": "oops"}], "test_acc"),
    ("history", 5, "history"),
    ("model", "nope", "unknown model"),
    ("train", 3, "train"),
])
def test_hostile_sidecar_field_is_one_error(conv_ticket, tmp_path, field, value, needle):
    ticket = copy_ticket(conv_ticket, tmp_path / "t")
    edit_sidecar(ticket, **{field: value})
    line = cli("info", ticket).one_error()
    assert needle in line, line


@pytest.mark.parametrize("text", ["[" * 100_000, '{"num_classes": ' + "9" * 5000 + "}", "[]"])
def test_unparsable_sidecar_is_one_error(conv_ticket, tmp_path, text):
    ticket = copy_ticket(conv_ticket, tmp_path / "t")
    ticket.with_suffix(".json").write_text(text)
    line = cli("info", ticket).one_error()
    # the error names the sidecar that was refused, not some later failure
    assert f"{ticket.with_suffix('.json')} is not a ticket sidecar" in line, line


def test_huge_num_classes_fails_before_allocating(conv_ticket, tmp_path):
    """A sidecar claiming 500,000 classes: shapes are checked on the meta device first."""
    ticket = copy_ticket(conv_ticket, tmp_path / "t")
    edit_sidecar(ticket, num_classes=500_000)
    code = ("import resource, sys\n"
            "from ticketmark.cli.main import main\n"
            "try:\n    main(['info', sys.argv[1]])\n"
            "except SystemExit as e:\n"
            "    print(e.code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    res = subprocess.run([sys.executable, "-c", code, str(ticket)], capture_output=True,
                         text=True, timeout=300)
    exit_code, peak_kib = map(int, res.stdout.split())
    assert exit_code == 2 and "shape" in res.stderr, res.stderr
    # conv2's last layer for 500k classes: 2 x 0.5 GB (state and rewind) on main.
    # the CLI's own footprint (torch, onnx, uvicorn imported) is ~1 GB; the 5e6-class
    # model alone would add 1.3 GB more
    assert peak_kib < 1536 * 1024, peak_kib


def test_verify_against_hostile_sidecar_is_one_error(conv_ticket, tmp_path):
    ticket = copy_ticket(conv_ticket, tmp_path / "t")
    edit_sidecar(ticket, in_channels=10**9)
    claim, seed = trigger_claim(tmp_path / "c")
    line = cli("verify", "--suspect", ticket, "--claim", claim, "--reveal", seed).one_error()
    assert "in_channels" in line


def _signature_claim(tmp_path: Path, ticket: Path, **params) -> Path:
    from ticketmark.ownership.claims import make_claim
    from ticketmark.ownership.keys import keygen, load_private_key
    from ticketmark.ownership.signature import qr

    key = load_private_key(keygen(tmp_path / "k")[0])
    code = qr.make_code("0123456789abcdef", mask=0)
    base = {"tag": "0123456789abcdef", "tag_fingerprint": "0" * 64, "qr_version": code.version,
            "qr_mask": 0, "size": code.size, "layer": "0.weight", "row": 0, "col": 0,
            "orientation": 0, "density": 0.5}
    claim = make_claim(key, "signature", load_ticket(ticket).fingerprint(),
                       {**base, **params})
    path = tmp_path / "sig.claim.json"
    path.write_text(json.dumps(claim.to_json()))
    return path


@pytest.mark.parametrize(("params", "needle"), [
    ({"densities": "x"}, "densities"),
    ({"densities": {"0.weight": "x"}}, "density"),
    ({"row": -5}, "row"),
    ({"qr_version": 10**6}, "qr_version"),
    ({"density": float("nan")}, "density"),
])
def test_hostile_signature_claim_params_are_one_error(conv_ticket, tmp_path, params, needle):
    claim = _signature_claim(tmp_path, conv_ticket, **params)
    line = cli("verify", "--suspect", conv_ticket, "--claim", claim).one_error()
    assert needle in line, line


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: c["claim"].update(params="x"), "params"),
    (lambda c: c["claim"].update(scheme=["signature"]), "scheme"),
    (lambda c: c.update(signature=5), "signature"),
    (lambda c: c["claim"].update(owner_public_key=None), "owner_public_key"),
])
def test_hostile_claim_fields_are_one_error(conv_ticket, tmp_path, edit, needle):
    path = _signature_claim(tmp_path, conv_ticket)
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))
    line = cli("verify", "--suspect", conv_ticket, "--claim", path).one_error()
    assert needle in line, line


# -- item 5: masks hold 0 and 1 only ------------------------------------------------------

@pytest.mark.parametrize("value", [2.0, 0.5, float("nan")])
def test_mask_values_other_than_0_1_rejected(conv_ticket, tmp_path, value):
    ticket = copy_ticket(conv_ticket, tmp_path / "t")
    tensors = load_file(ticket)
    name = next(k for k in tensors if k.startswith("mask."))
    mask = tensors[name].to(torch.float32)
    mask.view(-1)[0] = value
    tensors[name] = mask if value != 2.0 else mask.to(torch.uint8)
    save_file(tensors, ticket, metadata={"format": "ticketmark-ticket/1"})
    edit_sidecar(ticket, weights_sha256=hashlib.sha256(ticket.read_bytes()).hexdigest())
    line = cli("info", ticket).one_error()
    assert "values other than 0 and 1" in line, line


# -- item 6: the ticket and its sidecar are one pair ---------------------------------------

def _variant(conv_ticket: Path):
    """The conv ticket with half of its first layer's kept weights pruned."""
    t = load_ticket(conv_ticket)
    name = next(iter(t.mask))
    m = t.mask[name].clone()
    kept = torch.nonzero(m.flatten()).flatten()
    m.view(-1)[kept[: len(kept) // 2]] = False
    from ticketmark.sparsity import Mask

    t.mask = Mask({**dict(t.mask), name: m})
    t.state = {**t.state, name: t.state[name] * m}
    return t


def test_weights_without_their_sidecar_are_refused(conv_ticket, tmp_path):
    """A kill between the two renames: new weights beside the old sidecar."""
    a = save_ticket(tmp_path / "a" / "ticket", load_ticket(conv_ticket))
    b = save_ticket(tmp_path / "b" / "ticket", _variant(conv_ticket))
    b.replace(a)  # only the weights moved
    line = cli("info", a).one_error()
    assert "SHA-256" in line, line


def test_failed_save_leaves_the_old_pair_intact(conv_ticket, tmp_path, monkeypatch):
    from ticketmark.io import atomic

    old = load_ticket(conv_ticket)
    path = save_ticket(tmp_path / "ticket", old)
    bad = _variant(conv_ticket)
    bad.meta = {**bad.meta, "unserialisable": object()}  # the sidecar cannot be written
    with pytest.raises(TypeError):
        save_ticket(path, bad)
    # That failure comes before any file is touched. The one that matters comes after the
    # new weights were written: the sidecar's write fails (a full disk).
    stage, calls = atomic._stage, []

    def disk_full_on_second(target, data, secret=False):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return stage(target, data, secret)

    monkeypatch.setattr(atomic, "_stage", disk_full_on_second)
    with pytest.raises(OSError):
        save_ticket(path, _variant(conv_ticket))
    monkeypatch.undo()
    assert [c.suffix for c in calls] == [".safetensors", ".json"]
    again = load_ticket(path)
    assert again.fingerprint() == old.fingerprint()
    assert all(torch.equal(again.state[k], old.state[k]) for k in old.state)
    assert not list(tmp_path.glob(".*.tmp"))


def test_stale_tmp_leftovers_are_cleaned(conv_ticket, tmp_path):
    leftover = tmp_path / ".ticket.safetensors.abc123.tmp"
    fresh = tmp_path / ".ticket.json.def456.tmp"  # a writer that may still be running
    leftover.write_bytes(b"half a ticket")
    fresh.write_bytes(b"{")
    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    save_ticket(tmp_path / "ticket", load_ticket(conv_ticket))
    assert not leftover.exists() and fresh.exists()


def test_embed_writes_the_claim_before_the_ticket(conv_ticket, tmp_path, monkeypatch):
    """A failure (or kill) after the claim never leaves a signed ticket without its claim."""
    from ticketmark.cli import embed as embed_cli
    from ticketmark.ownership.claims import make_claim
    from ticketmark.ownership.keys import keygen, load_private_key

    key = load_private_key(keygen(tmp_path / "k")[0])
    claim = make_claim(key, "signature", "0" * 64, {})
    bad = _variant(conv_ticket)
    bad.meta = {**bad.meta, "unserialisable": object()}
    out, claim_out = tmp_path / "signed.safetensors", tmp_path / "signed.claim.json"
    with pytest.raises(TypeError):
        embed_cli.save_signed_pair(out, bad, claim_out, claim)
    assert not out.exists() and not claim_out.exists()  # the new claim was taken back

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for a kill while writing the claim

    monkeypatch.setattr(embed_cli, "save_claim", killed)
    with pytest.raises(KeyboardInterrupt):
        embed_cli.save_signed_pair(out, load_ticket(conv_ticket), claim_out, claim)
    assert not out.exists()  # no ticket without its claim


# -- item 7: a key file may not choose its own scrypt cost ---------------------------------

def _sealed_key_with_cost(path: Path, log2n: int, r: int, p: int) -> Path:
    from ticketmark.ownership.lock.keyfile import _ENC_HEAD, MAGIC

    cipher = os.urandom(64)
    path.write_bytes(MAGIC + b"\x01" + _ENC_HEAD.pack(log2n, r, p, len(cipher),
                                                     os.urandom(16), os.urandom(12)) + cipher)
    return path


@pytest.mark.parametrize(("log2n", "r", "p"), [(22, 8, 1), (20, 8, 1), (15, 8, 16)])
def test_key_file_scrypt_cost_is_capped(conv_ticket, tmp_path, log2n, r, p):
    key = _sealed_key_with_cost(tmp_path / "owner.lock", log2n, r, p)
    res = cli("unlock", "--ticket", conv_ticket, "--key", key, "--out", tmp_path / "r",
              "--passphrase-env", "TM_TEST_PASS", env={"TM_TEST_PASS": "guess"})
    line = res.one_error()
    assert "scrypt cost" in line, line
    assert not (tmp_path / "r.safetensors").exists()


def test_default_scrypt_cost_is_accepted():
    from ticketmark.errors import TicketmarkError
    from ticketmark.ownership.lock.keyfile import (
        SCRYPT_LOG2N,
        SCRYPT_P,
        SCRYPT_R,
        check_scrypt_cost,
    )

    check_scrypt_cost(SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P, "k")  # what seal writes
    check_scrypt_cost(SCRYPT_LOG2N + 3, SCRYPT_R, SCRYPT_P, "k")  # 8x: still fine
    with pytest.raises(TicketmarkError, match="scrypt cost"):  # 16x: the cap is right there
        check_scrypt_cost(SCRYPT_LOG2N + 4, SCRYPT_R, SCRYPT_P, "k")
