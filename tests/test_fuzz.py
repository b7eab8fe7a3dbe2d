"""Property-based fuzzing of every parser a thief feeds (hypothesis).

Property, for each input: the real CLI entry point ends in a verdict or in one ``error:``
line with exit 2 (never exit 3, never a traceback), and a failed command leaves no output
file behind. Inputs are a valid file with one field (or a few bytes) replaced by hostile
values: huge and 5,000-digit integers, NaN, deep nesting, wrong types, truncation.

Bounded by default (``TICKETMARK_FUZZ_EXAMPLES``, default 10 examples per property);
``TICKETMARK_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py`` fuzzes for longer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile_support import cli, copy_ticket, trigger_claim
from ticketmark.io import load_ticket
from ticketmark.ownership.claims import make_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.trigger.client import (
    ClientOptions,
    EndpointError,
    _answers_of,
    query_answers,
)

EXAMPLES = int(os.environ.get("TICKETMARK_FUZZ_EXAMPLES", "10"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# -- hostile JSON values -------------------------------------------------------------------

HUGE = st.sampled_from([10**30, -(10**30), 2**63, 2**64 + 1, -(2**63) - 1, 10**300])
# Placeholders _write_json swaps for text json.dumps cannot produce from Python values.
DIGITS, DEEP = "@5000-digit integer@", "@deeply nested list@"
SCALARS = (st.none() | st.booleans() | st.integers(-10, 300) | HUGE
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from([DIGITS, DEEP]))
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
RAW_TEXT = st.sampled_from([
    "[" * 100_000, "{" * 50_000, '{"a": ' + "9" * 5000 + "}", "", "null", "[]", "\xff\xfe",
    '{"a": 1e999999}', '"' + "x" * 10_000 + '"',
])


def _mutate(obj: dict[str, Any], path: list[str], value: Any, delete: bool) -> dict[str, Any]:
    """``obj`` with ``obj[path...]`` replaced by ``value`` (or removed)."""
    out = json.loads(json.dumps(obj))
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        if delete:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return out


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, allow_nan=True)
    text = text.replace(json.dumps(DIGITS), "9" * 5000)
    path.write_text(text.replace(json.dumps(DEEP), "[" * 50_000 + "]" * 50_000))


# -- ticket files: sidecar fields and safetensors header -------------------------------------

SIDECAR_KEYS = ["format", "model", "dataset", "in_channels", "num_classes", "image_size",
                "metrics", "history", "train", "rewind_epoch", "weights_sha256", "sparsity",
                "layer_density", "fingerprint"]


@pytest.fixture(scope="module")
def ticket_dir(conv_ticket) -> Path:
    root = Path(tempfile.mkdtemp(prefix="tm_fuzz_"))
    copy_ticket(conv_ticket, root / "t")
    return root / "t"


@pytest.fixture(scope="module")
def base_sidecar(ticket_dir) -> dict[str, Any]:
    return json.loads((ticket_dir / "ticket.json").read_text())


@FUZZ
@given(key=st.sampled_from(SIDECAR_KEYS), value=VALUES, delete=st.booleans())
def test_fuzz_sidecar_fields(ticket_dir, base_sidecar, key, value, delete):
    _write_json(ticket_dir / "ticket.json", _mutate(base_sidecar, [key], value, delete))
    cli("info", ticket_dir / "ticket.safetensors").assert_verdict_or_error((0,))


@FUZZ
@given(text=RAW_TEXT)
def test_fuzz_sidecar_text(conv_ticket, text):
    with tempfile.TemporaryDirectory() as tmp:
        t = copy_ticket(conv_ticket, Path(tmp))
        t.with_suffix(".json").write_text(text)
        cli("info", t).assert_verdict_or_error((0,))


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_header(conv_ticket, data):
    """Flip, truncate or rewrite the safetensors header; the sidecar records the new hash."""
    blob = conv_ticket.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    how = data.draw(st.sampled_from(["flip", "truncate", "field", "length"]))
    if how == "flip":
        at = data.draw(st.integers(0, 8 + n - 1))
        new = blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1:]
    elif how == "truncate":
        new = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "length":
        new = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1))) + blob[8:]
    else:
        name = data.draw(st.sampled_from(sorted(header)))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        value = data.draw(SCALARS | st.sampled_from(["F64", "I64", "BOOL", "U8", "F16", "C64"])
                          | st.lists(st.integers(-5, 10**6), max_size=4))
        if isinstance(header[name], dict):
            header[name][field] = value
        text = json.dumps(header).replace(json.dumps(DIGITS), "9" * 5000).encode()
        text += b" " * (-len(text) % 8)
        new = struct.pack("<Q", len(text)) + text + blob[8 + n:]
    with tempfile.TemporaryDirectory() as tmp:
        t = copy_ticket(conv_ticket, Path(tmp))
        t.write_bytes(new)
        meta = json.loads(t.with_suffix(".json").read_text())
        meta["weights_sha256"] = hashlib.sha256(new).hexdigest()
        t.with_suffix(".json").write_text(json.dumps(meta))
        cli("info", t).assert_verdict_or_error((0,))


# -- claims ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def claims(conv_ticket) -> dict[str, Any]:
    from ticketmark.ownership.signature import qr

    root = Path(tempfile.mkdtemp(prefix="tm_fuzz_claims_"))
    key = load_private_key(keygen(root / "k")[0])
    code = qr.make_code("fuzzfuzz", mask=0)
    fp = load_ticket(conv_ticket).fingerprint()
    sig = make_claim(key, "signature", fp, {
        "tag": "fuzzfuzz", "tag_fingerprint": "0" * 64, "qr_version": code.version,
        "qr_mask": 0, "size": code.size, "layer": "2.weight", "row": 0, "col": 0,
        "orientation": 0, "density": 0.5, "densities": {"2.weight": 0.5}})
    trig_file, seed = trigger_claim(root / "trigger")
    return {"root": root, "key": key, "signature": sig.to_json(),
            "trigger": json.loads(trig_file.read_text()), "seed": seed}


CLAIM_PATHS = [["signature"], ["claim", "scheme"], ["claim", "params"], ["claim", "format"],
               ["claim", "owner_public_key"], ["claim", "message"],
               ["claim", "model_fingerprint"], ["claim", "created"]]
SIG_PARAMS = ["tag", "qr_version", "qr_mask", "size", "layer", "row", "col", "orientation",
              "density", "densities"]
TRIG_PARAMS = ["kind", "generator", "commitment", "trigger"]
TRIG_FIELDS = ["size", "channels", "height", "width", "classes", "lo", "hi"]


@FUZZ
@given(data=st.data(), scheme=st.sampled_from(["signature", "trigger"]), resign=st.booleans())
def test_fuzz_claims(conv_ticket, claims, data, scheme, resign):
    """A thief's claim may be validly signed by the thief: re-signing reaches the parsers."""
    base = claims[scheme]
    keys = SIG_PARAMS if scheme == "signature" else TRIG_PARAMS
    paths = CLAIM_PATHS + [["claim", "params", k] for k in keys]
    if scheme == "trigger":
        paths += [["claim", "params", "trigger", k] for k in TRIG_FIELDS]
    path = data.draw(st.sampled_from(paths))
    obj = _mutate(base, path, data.draw(VALUES), data.draw(st.booleans()))
    if resign and isinstance(obj.get("claim"), dict):
        from ticketmark.ownership.claims import canonical

        with contextlib.suppress(ValueError, TypeError):
            obj["signature"] = base64.b64encode(
                claims["key"].sign(canonical(obj["claim"]))).decode()
    with tempfile.TemporaryDirectory() as tmp:
        claim = Path(tmp) / "claim.json"
        _write_json(claim, obj)
        report = Path(tmp) / "report"
        res = cli("verify", "--suspect", conv_ticket, "--claim", claim, "--reveal",
                  claims["seed"], "--report", report)
        res.assert_verdict_or_error()
        if res.code == 2:
            assert not report.exists() or not any(report.iterdir())


# -- seed files ------------------------------------------------------------------------------

@FUZZ
@given(key=st.sampled_from(["format", "scheme", "reveal", "excluded", "bases"]), value=VALUES,
       delete=st.booleans())
def test_fuzz_seed_files(conv_ticket, claims, key, value, delete):
    base = json.loads(Path(claims["seed"]).read_text())
    obj = _mutate(base, [key], value, delete)
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.json"
        _write_json(seed, obj)
        claim = Path(tmp) / "claim.json"
        _write_json(claim, claims["trigger"])
        cli("verify", "--suspect", conv_ticket, "--claim", claim,
            "--reveal", seed).assert_verdict_or_error()


def test_seed_file_excluded_overflow_is_one_error(conv_ticket, claims, tmp_path):
    obj = {**json.loads(Path(claims["seed"]).read_text()), "excluded": [10**30]}
    _write_json(tmp_path / "seed.json", obj)
    cli("verify", "--suspect", conv_ticket, "--claim", _claim_file(claims, tmp_path),
        "--reveal", tmp_path / "seed.json").assert_verdict_or_error()


def test_seed_file_deep_nesting_is_one_error(conv_ticket, claims, tmp_path):
    (tmp_path / "seed.json").write_text("[" * 100_000)
    cli("verify", "--suspect", conv_ticket, "--claim", _claim_file(claims, tmp_path),
        "--reveal", tmp_path / "seed.json").assert_verdict_or_error()


def _claim_file(claims: dict[str, Any], root: Path) -> Path:
    path = root / "claim.json"
    _write_json(path, claims["trigger"])
    return path


# -- key files -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lock_files(conv_ticket) -> dict[str, Path]:
    root = Path(tempfile.mkdtemp(prefix="tm_fuzz_lock_"))
    res = cli("lock", "--ticket", conv_ticket, "--method", "omp", "--weights", "40",
              "--key-out", root / "plain.lock", "--out", root / "locked")
    assert res.code == 0, res.err
    res = cli("lock", "--ticket", conv_ticket, "--method", "omp", "--weights", "40",
              "--key-out", root / "sealed.lock", "--out", root / "locked2",
              "--passphrase-env", "TM_FUZZ_PASS", env={"TM_FUZZ_PASS": "pw"})
    assert res.code == 0, res.err
    return {"plain": root / "plain.lock", "sealed": root / "sealed.lock",
            "locked": root / "locked.safetensors"}


def _reseal_plain(payload: bytes) -> bytes:
    from ticketmark.ownership.lock.keyfile import MAGIC

    return MAGIC + b"\x00" + struct.pack(">Q", len(payload)) + payload + \
        hashlib.sha256(payload).digest()


@FUZZ
@given(data=st.data(), which=st.sampled_from(["plain", "sealed", "header"]))
def test_fuzz_key_files(lock_files, data, which):
    blob = lock_files["plain" if which == "header" else which].read_bytes()
    if which == "header":  # a valid checksum over a rewritten key header: reaches the parser
        payload = blob[17:-32]
        n = int.from_bytes(payload[:8], "little")
        meta = json.loads(payload[8 : 8 + n])
        header = json.loads(meta["__metadata__"]["header"])
        field = data.draw(st.sampled_from(sorted(header)))
        header[field] = data.draw(VALUES)
        meta["__metadata__"]["header"] = json.dumps(header).replace(json.dumps(DIGITS), "9" * 5000)
        text = json.dumps(meta).encode()
        text += b" " * (-len(text) % 8)
        new = _reseal_plain(struct.pack("<Q", len(text)) + text + payload[8 + n:])
    elif data.draw(st.booleans()):
        at = data.draw(st.integers(0, min(len(blob), 64) - 1))
        new = blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1:]
    else:
        new = blob[: data.draw(st.integers(0, len(blob) - 1))]
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "k.lock"
        key.write_bytes(new)
        out = Path(tmp) / "restored"
        res = cli("unlock", "--ticket", lock_files["locked"], "--key", key, "--out", out,
                  "--passphrase-env", "TM_FUZZ_PASS", env={"TM_FUZZ_PASS": "pw"})
        res.assert_verdict_or_error((0,))
        if res.code != 0:
            assert not list(Path(tmp).glob("restored*"))


# -- endpoint answers -------------------------------------------------------------------------

@settings(max_examples=EXAMPLES * 10, deadline=None, database=None)
@given(labels=VALUES, top_k=st.none() | VALUES,
       raw=st.none() | RAW_TEXT | st.binary(max_size=64))
def test_fuzz_endpoint_json(labels, top_k, raw):
    """Labels (3,) in range, or finite scores (3, 10), or EndpointError: nothing else."""
    body = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if body is None:
        obj = {"labels": labels} if top_k is None else {"labels": labels, "top_k": top_k}
        body = json.dumps(obj).replace(json.dumps(DIGITS), "9" * 5000) \
            .replace(json.dumps(DEEP), "[" * 50_000 + "]" * 50_000).encode()
    try:
        out = _answers_of(body, 3, 10)
    except EndpointError:
        return
    if out.ndim == 2:
        assert out.dtype == np.float64 and out.shape == (3, 10) and np.isfinite(out).all()
        return
    assert out.dtype == np.int64 and out.shape == (3,)
    assert int(out.min()) >= 0 and int(out.max()) < 10


def test_top_k_answers_become_scores_and_are_checked():
    probs = [[[c, 0.9 if c == 7 else 0.01] for c in range(10)] for _ in range(3)]
    good = {"labels": [7, 7, 7], "top_k": probs}
    out = _answers_of(json.dumps(good).encode(), 3, 10)
    assert out.shape == (3, 10) and out.argmax(1).tolist() == [7, 7, 7]
    for bad, needle in ((dict(good, labels=[1, 7, 7]), "disagree"),
                        (dict(good, top_k=probs[:2]), "lists of 10"),
                        (dict(good, top_k=[r[:9] + [r[0]] for r in probs]), "every class once")):
        with pytest.raises(EndpointError, match=needle):
            _answers_of(json.dumps(bad).encode(), 3, 10)


RESPONSES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda status, headers, body: (f"HTTP/1.1 {status} X\r\n{headers}\r\n").encode()
              + body,
              st.sampled_from(["200", "301", "302", "307", "404", "500", "999", "abc", ""]),
              st.sampled_from(["Content-Length: 5\r\n", "Content-Length: -1\r\n",
                               "Content-Length: 99999999999999999999\r\n",
                               "Transfer-Encoding: chunked\r\n", "Location: http://x/\r\n",
                               "", "X: " + "y" * 70_000 + "\r\n"]),
              st.sampled_from([b'{"labels": [0]}', b"zz\r\n", b"1\r\n{\r\n0\r\n\r\n",
                               b"fffffffffffffffffffff\r\n", b"", b'{"labels": [1e999]}'])),
)


def _serve_raw(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)

    def run() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(1 << 20)
                conn.sendall(answer)
            except OSError:
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return srv, thread


@settings(max_examples=max(5, EXAMPLES // 2), deadline=None, database=None)
@given(answer=RESPONSES)
def test_fuzz_endpoint_http(answer):
    """Raw bytes as the HTTP answer: labels or EndpointError, never another exception."""
    srv, thread = _serve_raw(answer)
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/predict"
        opts = ClientOptions(batch_size=1, timeout=2, retries=0, deadline=5)
        try:
            out = query_answers(url, np.zeros((1, 1, 2, 2), np.float32), 10, opts)
        except EndpointError:
            return
        assert out.shape == (1,) and 0 <= int(out[0]) < 10
    finally:
        srv.close()
        thread.join(10)


def test_raw_server_harness_answers_labels():
    """The harness above can deliver a good answer, so its failures are the client's."""
    good = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"labels": [7]}'
    srv, thread = _serve_raw(good)
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/predict"
        out = query_answers(url, np.zeros((1, 1, 2, 2), np.float32), 10,
                           ClientOptions(batch_size=1, timeout=2, retries=0, deadline=5))
        assert out.tolist() == [7]
    finally:
        srv.close()
        thread.join(10)
