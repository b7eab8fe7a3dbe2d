"""Property-based fuzzing of the formats of issue 30: ONNX files, ``.pt`` archives, ``.npy``
inside trigger reveals, and KServe v2 answers (JSON and binary tensors).

Property: the real CLI entry point ends in a verdict (exit 0 or 1) or one ``error:`` line
with exit 2, never exit 3 or a traceback; the v2 answer reader returns labels in range or
finite scores of the expected shape, or raises ``ValueError`` / ``EndpointError``.

Budget: ``FUZZ_SMALL`` examples each in the default run (a few seconds in all); the
``-m slow`` twins run ``TICKETMARK_FUZZ_SLOW`` (default 300) each.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import hostile_files as hf
from tests.hostile_support import cli, trigger_claim
from tests.test_fuzz import EXAMPLES, HUGE, _serve_raw
from ticketmark.io import load_ticket
from ticketmark.ownership.claims import make_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.trigger.client import ClientOptions, EndpointError, query_answers
from ticketmark.serving import oip

_COMMON = {"deadline": None, "database": None,
           "suppress_health_check": [HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large]}
SMALL = settings(max_examples=max(3, EXAMPLES // 2), **_COMMON)
LONG = settings(max_examples=int(os.environ.get("TICKETMARK_FUZZ_SLOW", "300")), **_COMMON)
LAYER = "2.weight"

INTS = st.integers(-5, 70) | HUGE | st.sampled_from([2**31, 2**40, -(2**63), 2**63 - 1])
TEXTS = st.sampled_from(["", "0", "-1", "-8", "abc", "1e9", "99999999999999999999", "4096",
                         "../weights.bin", "/etc/passwd", "weights.bin", "w\x00", "."])


@pytest.fixture(scope="module")
def world(conv_ticket, tmp_path_factory) -> dict[str, Any]:
    """A signature claim over conv_ticket's 2.weight, its state, a trigger claim + reveal."""
    from ticketmark.ownership.signature import qr

    root = tmp_path_factory.mktemp("fuzz_formats")
    key = load_private_key(keygen(root / "k")[0])
    code = qr.make_code("fuzzfmt1", mask=0)
    sig = make_claim(key, "signature", load_ticket(conv_ticket).fingerprint(), {
        "tag": "fuzzfmt1", "tag_fingerprint": "0" * 64, "qr_version": code.version,
        "qr_mask": 0, "size": code.size, "layer": LAYER, "row": 0, "col": 0,
        "orientation": 0, "density": 0.5, "densities": {LAYER: 0.5}})
    trig, reveal = trigger_claim(root / "trigger")
    state = dict(load_ticket(conv_ticket).state)
    onnx_file = hf._onnx(root / "base.onnx", {k: v.numpy() for k, v in state.items()})
    return {"claim": save_claim(root / "sig.claim.json", sig), "state": state,
            "onnx": onnx_file.read_bytes(), "trigger": trig, "reveal": reveal}


def _verify(suspect: Path, world: dict[str, Any]) -> None:
    res = cli("verify", "--suspect", suspect, "--claim", world["claim"])
    res.assert_verdict_or_error()
    assert "Warning" not in res.err, res.err  # a verdict with a library's warning beside it


def _flip(blob: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if how == "truncate":
        return blob[: data.draw(st.integers(0, len(blob) - 1))]
    at = data.draw(st.integers(0, len(blob) - 1))
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1:]
    return blob[:at] + data.draw(st.binary(min_size=1, max_size=16)) + blob[at:]


# -- ONNX --------------------------------------------------------------------------------


def _onnx_case(world: dict[str, Any], data: st.DataObject) -> None:
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "model.onnx"
        if data.draw(st.booleans()):
            path.write_bytes(_flip(world["onnx"], data))
        else:
            model = onnx.load_from_string(world["onnx"])
            inits = list(model.graph.initializer)
            t = inits[data.draw(st.integers(0, len(inits) - 1))]
            field = data.draw(st.sampled_from(["dims", "data_type", "raw_data", "external",
                                               "float_data"]))
            if field == "dims":
                del t.dims[:]
                t.dims.extend(v % 2**63 if v >= 2**63 else v for v in data.draw(
                    st.lists(INTS.filter(lambda v: v >= -(2**63)), max_size=5)))
            elif field == "data_type":
                t.data_type = data.draw(st.integers(0, 40))
            elif field == "raw_data":
                t.raw_data = data.draw(st.binary(max_size=64))
            elif field == "float_data":
                t.ClearField("raw_data")
                t.float_data.extend(data.draw(st.lists(st.floats(width=32), max_size=8)))
            else:
                (folder / "weights.bin").write_bytes(
                    b"\1" * data.draw(st.integers(0, 8192)))
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                for key in data.draw(st.lists(st.sampled_from(
                        ["location", "offset", "length", "checksum"]), max_size=4)):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, data.draw(TEXTS)
            path.write_bytes(model.SerializeToString())
        _verify(path, world)


@SMALL
@given(data=st.data())
def test_fuzz_onnx(world, data):
    _onnx_case(world, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_fuzz_onnx_long(world, data):
    _onnx_case(world, data)


# -- .pt archives --------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8,
          torch.int64, torch.bool, torch.uint16, torch.uint32, torch.uint64, torch.complex64,
          torch.float8_e4m3fn, torch.float8_e5m2]


def _pt_case(world: dict[str, Any], data: st.DataObject) -> None:
    state = dict(world["state"])
    how = data.draw(st.sampled_from(["bytes", "view", "dtype", "nest", "deflate"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        if how == "view":
            base = torch.zeros(data.draw(st.integers(1, 64)))
            size = data.draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=4))
            stride = data.draw(st.lists(st.integers(0, 2**20), min_size=len(size),
                                        max_size=len(size)))
            try:
                state[LAYER] = base.as_strided(size, stride, data.draw(st.integers(0, 64)))
            except RuntimeError:
                assume(False)
            torch.save(state, path)
        elif how == "dtype":
            dtype = data.draw(st.sampled_from(DTYPES))
            state[LAYER] = state[LAYER].to(dtype) if dtype != torch.bool else state[LAYER] > 0
            torch.save({"state_dict": state, "epoch": 3}, path)
        elif how == "nest":
            nested: Any = state
            for _ in range(data.draw(st.integers(0, 12))):
                nested = {data.draw(st.sampled_from(["model", "state_dict", "x", "optim"])):
                          nested, "n": data.draw(st.integers(-5, 5))}
            torch.save(nested, path)
        else:
            legacy = how == "bytes" and data.draw(st.booleans())  # a pre-zip file, damaged
            torch.save(state, path, _use_new_zipfile_serialization=not legacy)
            blob = path.read_bytes()
            if how == "deflate":
                with zipfile.ZipFile(path) as src, zipfile.ZipFile(
                        Path(tmp) / "z.pt", "w") as dst:
                    for info in src.infolist():
                        dst.writestr(info.filename, src.read(info),
                                     compress_type=zipfile.ZIP_DEFLATED)
                path = Path(tmp) / "z.pt"
            else:
                path.write_bytes(_flip(blob, data))
        _verify(path, world)


@SMALL
@given(data=st.data())
def test_fuzz_pt(world, data):
    _pt_case(world, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_fuzz_pt_long(world, data):
    _pt_case(world, data)


# -- .npy inside a trigger reveal ------------------------------------------------------------

SHAPES = st.lists(INTS, max_size=6).map(tuple) | st.sampled_from(
    [(), (1, 1, 8, 8), (2**62, 2**62), (1 << 20, 3, 1 << 10, 1 << 10), "x", None])
DESCRS = st.sampled_from(["<f4", ">f4", "<f8", "|O", "<c8", "|V8", "<i8", "|b1", "<U3",
                          "[('a', '<f4')]", "(2,)<f4", "<f2", "garbage"])


def _npy_case(world: dict[str, Any], data: st.DataObject) -> None:
    shape, descr = data.draw(SHAPES), data.draw(DESCRS)
    descr_text = descr if descr.startswith(("[", "(")) else repr(descr)
    header = "{'descr': " + descr_text + ", 'fortran_order': " + \
        data.draw(st.sampled_from(["False", "True", "1", "'x'"])) + ", 'shape': " + \
        repr(shape) + ", }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    version = data.draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]))
    size = struct.pack("<H", len(header)) if version == b"\x01\x00" else \
        struct.pack("<I", len(header))
    payload = b"\0" * data.draw(st.integers(0, 300))
    npy = b"\x93NUMPY" + version + size + header.encode() + payload
    if data.draw(st.booleans()):
        npy = _flip(npy, data)
    with tempfile.TemporaryDirectory() as tmp:
        bad = hf.reveal_with_bases(world["reveal"], Path(tmp) / "reveal.json", npy)
        cli("verify", "--suspect", "http://127.0.0.1:9/predict", "--claim", world["trigger"],
            "--reveal", bad, "--timeout", "1", "--deadline", "2").assert_verdict_or_error()


@SMALL
@given(data=st.data())
def test_fuzz_reveal_npy(world, data):
    _npy_case(world, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_fuzz_reveal_npy_long(world, data):
    _npy_case(world, data)


# -- KServe v2 answers: JSON and binary tensors --------------------------------------------

N, K = 3, 10
DATATYPE = st.sampled_from(list(oip.DATATYPES) + ["BYTES", "BF16", None, 7])
SHAPE = st.sampled_from([[N, K], [N], [N, K + 1], [K, N], [], [2**40], None, "x"]) | st.lists(
    INTS, max_size=3)


@st.composite
def v2_answers(draw: Any) -> tuple[bytes, str | None]:
    """A v2 answer body and its Inference-Header-Content-Length, each part maybe hostile."""
    outputs, blob = [], b""
    for _ in range(draw(st.integers(0, 3))):
        t: dict[str, Any] = {"name": draw(st.sampled_from(["logits", "label", "x"])),
                             "shape": draw(SHAPE), "datatype": draw(DATATYPE)}
        if draw(st.booleans()):  # binary
            dtype = oip.DATATYPES.get(t["datatype"], np.float32) \
                if isinstance(t["datatype"], str) else np.float32
            count = draw(st.integers(0, 40))
            values = draw(st.sampled_from(["zeros", "nan", "big", "random"]))
            arr = {"zeros": np.zeros(count), "nan": np.full(count, np.nan),
                   "big": np.full(count, 1e300),
                   "random": np.arange(count) % 12}[values]
            with np.errstate(all="ignore"):
                raw = arr.astype(dtype).tobytes()
            size: Any = len(raw) + draw(st.sampled_from([0, 0, 0, 1, -1, 8]))
            t["parameters"] = {"binary_data_size": draw(st.sampled_from([size, size, -1,
                                                                         "8", 2**70, True]))}
            blob += raw
        else:
            t["data"] = draw(st.lists(st.integers(-2, 12) | st.floats() | HUGE, max_size=40))
        outputs.append(t)
    head = json.dumps({"outputs": outputs}).encode()
    blob += draw(st.sampled_from([b"", b"", b"\0" * 4]))
    header = draw(st.sampled_from([str(len(head)), str(len(head))] if blob else [None]) |
                  st.sampled_from([None, "-1", "abc", str(len(head) + 1), "0", "9" * 30]))
    return head + blob, header


def _check_answers(body: bytes, header: str | None) -> None:
    try:
        out = oip.read_response(body, header, N, K)
    except ValueError:
        return
    if out.ndim == 2:
        assert out.dtype == np.float64 and out.shape == (N, K) and np.isfinite(out).all()
    else:
        assert out.dtype == np.int64 and out.shape == (N,)
        assert int(out.min()) >= 0 and int(out.max()) < K


@settings(max_examples=EXAMPLES * 10, deadline=None, database=None)
@given(answer=v2_answers())
def test_fuzz_v2_answers(answer):
    _check_answers(*answer)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("TICKETMARK_FUZZ_SLOW", "300")) * 10,
          deadline=None, database=None)
@given(answer=v2_answers())
def test_fuzz_v2_answers_long(answer):
    _check_answers(*answer)


@SMALL
@given(answer=v2_answers(), status=st.sampled_from([b"200 OK", b"404 Not Found",
                                                    b"302 Found"]))
def test_fuzz_v2_over_http(answer, status):
    """The same answers over a raw socket, through the real client: answers or
    EndpointError, never another exception."""
    body, header = answer
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body)
    if header is not None:
        head += f"{oip.BINARY_HEADER}: {header}\r\n".encode()
    srv, thread = _serve_raw(head + b"\r\n" + body)
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/v2/models/m/infer"
        opts = ClientOptions(batch_size=N, timeout=2, retries=0, deadline=5)
        try:
            out = query_answers(url, np.zeros((N, 1, 2, 2), np.float32), K, opts)
        except EndpointError:
            return
        assert out.shape in ((N,), (N, K))
    finally:
        srv.close()
        thread.join(10)


def test_v2_answer_generator_reaches_valid_binary_answers():
    """The harness can produce an answer the reader accepts, so its refusals are real."""
    labels = np.array([1, 2, 3], "<i8").tobytes()
    head = json.dumps({"outputs": [{"name": "label", "shape": [N], "datatype": "INT64",
                                    "parameters": {"binary_data_size": len(labels)}}]}).encode()
    assert oip.read_response(head + labels, str(len(head)), N, K).tolist() == [1, 2, 3]


# -- KServe v2 requests, as serve decodes them ----------------------------------------------

JSONISH = st.recursive(st.none() | st.booleans() | INTS | st.floats() | st.text(max_size=6),
                       lambda kids: st.lists(kids, max_size=3)
                       | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)


@st.composite
def v2_requests(draw: Any) -> tuple[bytes, str | None]:
    n = draw(st.integers(0, 3))
    raw = np.zeros((n, 1, 8, 8), np.float32).tobytes()
    tensor: dict[str, Any] = {"name": "input", "shape": draw(
        st.sampled_from([[n, 1, 8, 8], [n, 64], [n]]) | st.lists(INTS, max_size=5)),
        "datatype": draw(DATATYPE)}
    binary = draw(st.booleans())
    if binary:
        tensor["parameters"] = {"binary_data_size": draw(st.sampled_from(
            [len(raw), len(raw) + 4, -1, "x", 2**70]))}
    else:
        tensor["data"] = draw(st.sampled_from([[0.0] * (n * 64), [], "x"]) | JSONISH)
    body: dict[str, Any] = {"inputs": [tensor]}
    for key in draw(st.lists(st.sampled_from(["outputs", "parameters", "id", "inputs"]),
                             max_size=2)):
        body[key] = draw(JSONISH | st.just([{"name": "label", "parameters": {
            "binary_data": draw(JSONISH)}}]))
    head = json.dumps(body).encode()
    header = str(len(head)) if binary else None
    header = draw(st.sampled_from([header, header, None, "-1", str(len(head) + 9), "x"]))
    return head + (raw if binary else b"") + draw(st.sampled_from([b"", b"\0\0\0\0"])), header


def _check_request(body: bytes, header: str | None) -> None:
    from ticketmark.serving.protocol import BadRequest

    try:
        x, names, _ = oip.decode_request(body, (1, 8, 8), 16, header)
    except BadRequest as exc:
        assert 400 <= exc.status < 500
        return
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and 1 <= len(x) <= 16
    assert names and all(n in oip.OUTPUTS and isinstance(b, bool) for n, b in names)


@settings(max_examples=EXAMPLES * 10, deadline=None, database=None)
@given(request=v2_requests())
def test_fuzz_v2_requests(request):
    _check_request(*request)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("TICKETMARK_FUZZ_SLOW", "300")) * 10,
          deadline=None, database=None)
@given(request=v2_requests())
def test_fuzz_v2_requests_long(request):
    _check_request(*request)
