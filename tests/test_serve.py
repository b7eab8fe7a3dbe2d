"""Prediction endpoints: the real server, verification through it, misbehaving servers."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.trigger_support import fresh_claim, marked_conv
from ticketmark.io import load_ticket
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, UNVERIFIABLE, VerifyOptions
from ticketmark.serving import encode_npy, make_server, serve_in_thread


@pytest.fixture()
def server(conv_ticket):
    t = load_ticket(conv_ticket)
    srv = make_server(t.build(), (1, 8, 8), 10, max_body=200_000, max_batch=64)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_predict_lists_npy_and_topk(server):
    x = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
    status, a = _post(server.url, json.dumps({"inputs": x.tolist(), "top_k": 2}).encode())
    assert status == 200 and len(a["labels"]) == 3 and len(a["top_k"][0]) == 2
    status, b = _post(server.url, json.dumps({"npy": encode_npy(x)}).encode())
    assert status == 200 and b["labels"] == a["labels"] and "top_k" not in b
    assert a["top_k"][0][0][0] == a["labels"][0]
    with urllib.request.urlopen(server.url.replace("/predict", "/health"), timeout=10) as r:
        assert json.loads(r.read())["input_shape"] == [1, 8, 8]


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"inputs": [[1, 2], [3]]}).encode(), 400, "rectangular"),
    (json.dumps({"inputs": np.zeros((2, 1, 7, 8)).tolist()}).encode(), 400, "shape"),
    (json.dumps({"npy": "%%%"}).encode(), 400, "base64"),
    (json.dumps({"npy": base64.b64encode(b"\x93NUMPY junk").decode()}).encode(), 400, ".npy"),
    (json.dumps({"inputs": [], "npy": ""}).encode(), 400, "exactly one"),
    (json.dumps({"inputs": np.zeros((65, 1, 8, 8)).tolist()}).encode(), 413, "limit"),
    (json.dumps({"inputs": np.zeros((1, 1, 8, 8)).tolist(), "top_k": -1}).encode(), 400,
     "top_k"),
    (b"x" * 300_000, 413, "exceeds"),
])
def test_malformed_bodies_get_clear_4xx(server, body, status, needle):
    got, obj = _post(server.url, body)
    assert got == status and needle in obj["error"]


def test_nan_and_unknown_path(server):
    x = np.full((1, 1, 8, 8), np.nan, dtype=np.float32)
    assert _post(server.url, json.dumps({"npy": encode_npy(x)}).encode())[0] == 400
    assert _post(server.url.replace("/predict", "/other"), b"{}")[0] == 404


def test_verify_through_real_server(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    t = load_ticket(m.ticket)
    srv = make_server(t.build(), (1, 8, 8), 10)
    serve_in_thread(srv)
    try:
        opts = VerifyOptions(reveal=m.seed_file, batch_size=30, report_dir=tmp_path)
        v = verify_claim(srv.url, m.claim, opts)
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        assert verify_claim(base, m.claim, VerifyOptions(reveal=m.seed_file)).status == OWNED
    finally:
        srv.shutdown()
        srv.server_close()
    assert v.status == OWNED and v.evidence["matches"] >= 95 and v.p_value < 1e-60
    direct = verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file))
    assert direct.evidence["matches"] == v.evidence["matches"]
    # The server's probabilities (asked as every class's top_k) give the rank test too;
    # rounded to 6 decimals they tie at the bottom, and ties never earn points.
    assert 0 < v.evidence["rank_points"] <= direct.evidence["rank_points"]


def test_cli_serve_and_verify(conv_ticket):
    """``ticketmark serve`` on a free port, ``ticketmark verify`` against its URL."""
    m = marked_conv(conv_ticket)
    proc = subprocess.Popen([sys.executable, "-m", "ticketmark", "serve", "--model", m.ticket,
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()  # "serving ... on http://127.0.0.1:PORT/predict"
        url = re.search(r"http://127\.0\.0\.1:\d+/predict", line)
        assert url, line + proc.stderr.read() if proc.poll() is not None else line
        res = subprocess.run([sys.executable, "-m", "ticketmark", "verify", "--suspect",
                              url.group(0), "--claim", m.claim_file, "--reveal", m.seed_file,
                              "--timeout", "30"], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "OWNED" in res.stdout and "matches" in res.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _Bad(BaseHTTPRequestHandler):
    """Answers POST /predict according to ``server.mode``."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = len(np.load(__import__("io").BytesIO(base64.b64decode(body["npy"]))))
        mode = self.server.mode  # type: ignore[attr-defined]
        self.server.hits += 1  # type: ignore[attr-defined]
        status, payload = 200, json.dumps({"labels": [0] * n}).encode()
        if mode == "malformed":
            payload = b'{"labels": [1, 2,'
        elif mode == "count":
            payload = json.dumps({"labels": [0] * (n + 1)}).encode()
        elif mode == "range":
            payload = json.dumps({"labels": [11] * n}).encode()
        elif mode == "types":
            payload = json.dumps({"labels": ["3"] * n}).encode()
        elif mode == "missing":
            payload = json.dumps({"predictions": [0] * n}).encode()
        elif mode == "error":
            status = 500
        elif mode == "sleep":
            time.sleep(1.5)
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def bad_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Bad)
    srv.daemon_threads = True
    srv.mode, srv.hits = "ok", 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(("mode", "needle"), [
    ("malformed", "malformed JSON"),
    ("count", "101 labels for 100"),
    ("range", "outside"),
    ("types", "integers"),
    ("missing", "no 'labels'"),
    ("error", "HTTP 500"),
    ("sleep", "did not answer within"),
])
def test_misbehaving_server_could_not_verify(bad_server, tmp_path, mode, needle):
    params_src = {"size": 100, "channels": 1, "height": 8, "width": 8, "classes": 10,
                  "lo": -0.8, "hi": 1.8}
    from ticketmark.ownership.trigger.generate import TriggerParams

    claim, seed_file, _ = fresh_claim(TriggerParams.from_dict(params_src), tmp_path)
    bad_server.mode = mode
    url = f"http://127.0.0.1:{bad_server.server_address[1]}/predict"
    start = time.perf_counter()
    v = verify_claim(url, claim, VerifyOptions(reveal=seed_file, timeout=0.3, batch_size=100))
    assert v.status == UNVERIFIABLE and v.reason.startswith("could not verify")
    assert needle in v.reason, v.reason
    assert time.perf_counter() - start < 10
    if mode in ("error", "sleep"):
        assert bad_server.hits == 3  # retried with backoff, then gave up
    bad_server.mode = "ok"  # a well-formed answer from an unmarked model: a plain negative
    assert verify_claim(url, claim, VerifyOptions(reveal=seed_file)).status == NOT_OWNED


def test_unreachable_endpoint_and_query_cap(tmp_path):
    from ticketmark.ownership.trigger.generate import TriggerParams

    claim, seed_file, _ = fresh_claim(TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8), tmp_path)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Bad)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens there now
    v = verify_claim(f"http://127.0.0.1:{port}/predict", claim,
                     VerifyOptions(reveal=seed_file, timeout=0.5))
    assert v.status == UNVERIFIABLE and "cannot reach" in v.reason
    v = verify_claim(f"http://127.0.0.1:{port}/predict", claim,
                     VerifyOptions(reveal=seed_file, max_queries=50))
    assert v.status == UNVERIFIABLE and "cap" in v.reason
