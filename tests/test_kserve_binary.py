"""Standard KServe v2 clients and servers, unmodified (issue 29), and one deadline for every
protocol (issue 30).

* ``tritonclient.http`` with its default settings (binary tensors both ways) reads
  ``serve``'s metadata and runs inference; so do its JSON and gzip variants;
* ``verify`` reads answers in binary tensors, from ``serve`` (adapter ``binary = true``) and
  from a server that always answers binary, with the same evidence as over JSON;
* a 404 for a wrong model name names the served model, in tritonclient's exception and in
  verify's COULD NOT VERIFY reason;
* a KServe v2 endpoint that drips its answer gives COULD NOT VERIFY at the deadline, as
  ``/predict`` does (it was exit 3);
* malformed binary requests and answers are a 400 / COULD NOT VERIFY.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.hostile_support import TRIGGER, HostileServer, cli
from tests.trigger_support import fresh_claim
from ticketmark.io import load_ticket
from ticketmark.ownership.trigger.adapter import InputAdapter
from ticketmark.ownership.trigger.client import ClientOptions, EndpointError, query_answers
from ticketmark.ownership.verdict import UNVERIFIABLE, VerifyOptions
from ticketmark.ownership.verify import verify_claim
from ticketmark.serving import make_server, oip, serve_in_thread

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def model(conv_ticket) -> torch.nn.Module:
    return load_ticket(conv_ticket).build().eval()


@pytest.fixture(scope="module")
def served(model):
    srv = make_server(model, SHAPE, 10, name="ticket")
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def claim(tmp_path_factory):
    root = tmp_path_factory.mktemp("kserve_binary")
    claim, reveal, _ = fresh_claim(TRIGGER, root)
    from ticketmark.ownership.claims import save_claim

    return save_claim(root / "claim.json", claim), reveal


def _triton(served) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{served.server_address[1]}")


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_tritonclient_defaults_metadata_and_inference(served, model):
    client = _triton(served)
    try:
        assert client.is_server_live() and client.is_model_ready("ticket")
        meta = client.get_model_metadata("ticket")
        assert meta["inputs"][0]["name"] == "input"
        assert meta["inputs"][0]["shape"] == [-1, *SHAPE]
        x = np.random.default_rng(0).standard_normal((5, *SHAPE)).astype(np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary_data=True: tritonclient's default
        result = client.infer("ticket", [inp])  # no outputs named: all, in binary
        want = _logits(model, x)
        np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=1e-5, atol=1e-5)
        assert result.as_numpy("label").tolist() == want.argmax(1).tolist()
        assert result.get_output("logits")["parameters"]["binary_data_size"] == 5 * 10 * 4
        # One output asked for, in binary; and plain JSON both ways.
        only = client.infer("ticket", [inp], outputs=[httpclient.InferRequestedOutput("label")])
        assert only.as_numpy("logits") is None
        assert only.as_numpy("label").tolist() == want.argmax(1).tolist()
        inp.set_data_from_numpy(x, binary_data=False)
        plain = client.infer("ticket", [inp], outputs=[
            httpclient.InferRequestedOutput("logits", binary_data=False)])
        assert "data" in plain.get_output("logits")
        np.testing.assert_allclose(plain.as_numpy("logits"), want, atol=1e-5)
    finally:
        client.close()


def test_tritonclient_gzip_request_and_wrong_model_name(served, model):
    client = _triton(served)
    try:
        x = np.zeros((2, *SHAPE), np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("ticket", [inp], request_compression_algorithm="gzip")
        assert out.as_numpy("label").tolist() == _logits(model, x).argmax(1).tolist()
        with pytest.raises(InferenceServerException, match="this server has 'ticket'"):
            client.infer("stolen", [inp])
    finally:
        client.close()


def _raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def _binary_request(n: int, declared: int | None = None, extra: bytes = b"",
                    header: str | None = None) -> tuple[bytes, dict[str, str]]:
    raw = np.zeros((n, *SHAPE), np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": [n, *SHAPE], "datatype": "FP32",
                                   "parameters": {"binary_data_size": declared or len(raw)}}]
                       }).encode()
    return head + raw + extra, {oip.BINARY_HEADER: header or str(len(head))}


@pytest.mark.parametrize(("make", "status", "needle"), [
    (lambda: _binary_request(2, declared=10**12), 400, "binary_data_size"),
    (lambda: _binary_request(2, extra=b"\0" * 4), 400, "binary bytes follow"),
    (lambda: _binary_request(2, header="99999999"), 400, "not a length"),
    (lambda: _binary_request(2, header="-1"), 400, "not a length"),
    (lambda: _binary_request(10**5), 413, "exceeds the limit"),
    (lambda: (gzip.compress(b"{" + b" " * (40 << 20) + b"}", compresslevel=1),
              {"Content-Encoding": "gzip"}), 413, "inflates beyond"),
    (lambda: (b"{}", {"Content-Encoding": "br"}), 415, "not accepted"),
], ids=["size-vs-bytes", "trailing-bytes", "header-past-body", "header-negative",
        "huge-shape", "gzip-bomb", "brotli"])
def test_malformed_binary_requests_are_4xx(served, make, status, needle):
    body, headers = make()
    got, message = _raw_post(served.v2_url, body, headers)
    assert (got, needle in message) == (status, True), (got, message)


def test_verify_reads_binary_tensors_from_serve(served, claim, tmp_path):
    """adapter ``binary = true``: binary input and outputs; the same evidence as JSON."""
    claim_file, reveal = claim
    as_json = verify_claim(served.v2_url, claim_file, VerifyOptions(reveal=reveal))
    as_binary = verify_claim(served.v2_url, claim_file, VerifyOptions(
        reveal=reveal, adapter=InputAdapter(binary=True).validate()))
    assert as_json.status == as_binary.status != UNVERIFIABLE, as_binary.reason
    assert as_json.evidence["matches"] == as_binary.evidence["matches"]
    assert as_json.p_value == pytest.approx(as_binary.p_value)
    (tmp_path / "binary.toml").write_text("binary = true\n")
    res = cli("verify", "--suspect", served.v2_url, "--claim", claim_file, "--reveal", reveal,
              "--adapter", tmp_path / "binary.toml")
    res.assert_verdict_or_error()
    assert f"trigger: {as_json.status}" in res.out, res.out


class _AlwaysBinary(BaseHTTPRequestHandler):
    """A Triton-like server that answers every request in binary tensors; ``mode`` breaks
    the answer in one way."""

    model: torch.nn.Module
    mode = "ok"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        x = np.asarray(req["inputs"][0]["data"], np.float32).reshape(req["inputs"][0]["shape"])
        logits = _logits(self.model, x).astype("<f4")
        labels = logits.argmax(1).astype("<i8")
        raw_l, raw_s = labels.tobytes(), logits.tobytes()
        if self.mode == "nan":
            raw_s = np.full_like(logits, np.nan).tobytes()
        size_s = len(raw_s) + (8 if self.mode == "oversize" else 0)
        head = json.dumps({"model_name": "m", "outputs": [
            {"name": "label", "shape": [len(labels)], "datatype": "INT64",
             "parameters": {"binary_data_size": len(raw_l)}},
            {"name": "scores", "shape": list(logits.shape), "datatype": "FP32",
             "parameters": {"binary_data_size": size_s}}]}).encode()
        body = head + raw_l + raw_s
        self.send_response(200)
        if self.mode != "no_header":
            self.send_header(oip.BINARY_HEADER, str(len(head)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def _binary_server(model: torch.nn.Module, mode: str = "ok") -> Iterator[str]:
    """A v2 URL answered by ``_AlwaysBinary``."""
    handler = type("H", (_AlwaysBinary,), {"model": model, "mode": mode})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m/infer"
    finally:
        srv.shutdown()
        srv.server_close()


def _v2_url(srv: HostileServer) -> str:
    return srv.url.replace("/predict", "/v2/models/m/infer")


def test_verify_reads_a_server_answering_binary(model, served, claim):
    """A Triton-like server answering binary tensors: the same answers and evidence as
    ``serve`` over JSON."""
    claim_file, reveal = claim
    x = np.random.default_rng(1).standard_normal((7, *SHAPE)).astype(np.float32)
    with _binary_server(model) as url:
        scores = query_answers(url, x, 10, ClientOptions(batch_size=3))
        v = verify_claim(url, claim_file, VerifyOptions(reveal=reveal))
    np.testing.assert_allclose(scores, _logits(model, x), rtol=1e-5, atol=1e-5)
    as_json = verify_claim(served.v2_url, claim_file, VerifyOptions(reveal=reveal))
    assert v.status == as_json.status != UNVERIFIABLE, v.reason
    assert v.evidence["matches"] == as_json.evidence["matches"]


@pytest.mark.parametrize(("mode", "needle"), [
    ("nan", "NaN"), ("oversize", "add up to more"), ("no_header", "malformed JSON"),
])
def test_malformed_binary_answers_could_not_verify(model, mode, needle):
    x = np.zeros((3, *SHAPE), np.float32)
    with _binary_server(model, mode) as url, pytest.raises(EndpointError, match=needle):
        query_answers(url, x, 10, ClientOptions(retries=0))


def test_kserve_drip_feed_hits_the_deadline(claim):
    """One byte every 0.4 s on a v2 endpoint: COULD NOT VERIFY at the deadline (was exit 3,
    "unexpected _DeadlinePassed"), as on /predict."""
    claim_file, reveal = claim

    def drip(handler, n):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(150):
            if server.stopped.is_set():
                return
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.4)

    with HostileServer(drip) as server:
        start = time.monotonic()
        res = cli("verify", "--suspect", _v2_url(server), "--claim", claim_file, "--reveal",
                  reveal, "--timeout", "2", "--deadline", "0.6")
        took = time.monotonic() - start
    assert res.code == 1, res.err
    assert "COULD NOT VERIFY" in res.out and "deadline of 0.6 s" in res.out, res.out
    assert took < 10


def test_verify_404_names_the_served_model(served, claim):
    claim_file, reveal = claim
    wrong = served.v2_url.replace("/ticket/", "/stolen/")
    v = verify_claim(wrong, claim_file, VerifyOptions(reveal=reveal))
    assert v.status == UNVERIFIABLE
    assert "HTTP 404" in v.reason and "this server has 'ticket'" in v.reason, v.reason


def test_dripping_time_stamp_authority_hits_the_deadline():
    """The RFC 3161 request runs on the same transport: a TSA dripping its reply one byte
    every 0.2 s (each inside the per-read timeout) is cut off at the deadline."""
    from ticketmark.errors import TicketmarkError
    from ticketmark.ownership.timestamp import request_token

    def drip(handler, n):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(100):
            if server.stopped.is_set():
                return
            try:
                handler.wfile.write(b"0")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    with HostileServer(drip) as server:
        start = time.monotonic()
        with pytest.raises(TicketmarkError, match="did not answer within 0.5 s"):
            request_token(b"\0" * 32, server.url.replace("/predict", "/tsa"), timeout=0.5)
        assert time.monotonic() - start < 5
