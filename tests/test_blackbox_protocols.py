"""Black-box verification over the protocols thieves deploy with, and the Python API's
module path: ticketmark's own ``/predict``, the Open Inference Protocol (KServe v2) of
``ticketmark serve``, a v2 server that expects raw channels-last pixels (through an input
adapter), hostile v2 answers, and ``tm.verify(nn.Module, claim)``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

import ticketmark as tm
from tests.conftest import one_line_error, run_cli
from tests.trigger_support import fresh_claim, marked_conv
from ticketmark.io import load_ticket
from ticketmark.ownership.trigger.adapter import InputAdapter
from ticketmark.ownership.trigger.generate import TriggerParams
from ticketmark.ownership.verdict import OWNED, UNVERIFIABLE, VerifyOptions
from ticketmark.ownership.verify import verify_claim
from ticketmark.serving import make_server, serve_in_thread

MEAN, STD = 0.25, 0.5  # the "thief's" server normalisation in the adapter test


@pytest.fixture(scope="module")
def marked(conv_ticket):
    return marked_conv(conv_ticket)


@pytest.fixture(scope="module")
def served(marked):
    t = load_ticket(marked.ticket)
    srv = make_server(t.build(), (1, 8, 8), 10, name="stolen")
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_same_verdict_over_both_protocols_and_from_the_file(marked, served):
    opts = VerifyOptions(reveal=marked.seed_file)
    own = verify_claim(served.url, marked.claim_file, opts)
    v2 = verify_claim(served.v2_url, marked.claim_file, opts)
    direct = verify_claim(str(marked.ticket), marked.claim_file, opts)
    assert own.status == v2.status == direct.status == OWNED
    assert own.evidence["matches"] == v2.evidence["matches"] == direct.evidence["matches"]
    assert v2.p_value == pytest.approx(direct.p_value)


def test_python_api_verifies_a_module(marked):
    """tm.verify(nn.Module, claim): the module is served in-process and queried."""
    model = load_ticket(marked.ticket).build().eval()
    verdict = tm.verify(model, marked.claim_file, reveal=marked.seed_file)
    direct = tm.verify(str(marked.ticket), marked.claim_file, reveal=marked.seed_file)
    assert verdict.status == OWNED
    assert verdict.evidence["matches"] == direct.evidence["matches"]


class _RawPixelsV2(BaseHTTPRequestHandler):
    """A minimal third-party-style v2 server: NHWC 0..255 pixels, normalises itself, and
    answers logits only (under its own output name)."""

    model: torch.nn.Module

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        t = req["inputs"][0]
        assert t["name"] == "pixels" and t["datatype"] == "FP32"
        x = np.asarray(t["data"], np.float32).reshape(t["shape"])  # N, H, W, C
        x = (x / 255.0 - MEAN) / STD
        with torch.no_grad():
            out = self.model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        body = json.dumps({"model_name": "m", "outputs": [
            {"name": "scores", "shape": list(out.shape), "datatype": "FP32",
             "data": out.reshape(-1).tolist()}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(handler) -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m/infer"


def test_adapter_file_lays_out_and_scales_for_a_foreign_server(marked, tmp_path):
    handler = type("H", (_RawPixelsV2,), {"model": load_ticket(marked.ticket).build().eval()})
    srv, url = _serve(handler)
    adapter = tmp_path / "adapter.toml"
    adapter.write_text(f'layout = "NHWC"\nmean = [{MEAN}]\nstd = [{STD}]\nscale = 255\n'
                       'input_name = "pixels"\n')
    try:
        res = run_cli("verify", "--suspect", url, "--claim", marked.claim_file, "--reveal",
                      marked.seed_file, "--adapter", adapter)
        wrong = verify_claim(url, marked.claim_file, VerifyOptions(
            reveal=marked.seed_file,
            adapter=InputAdapter(layout="NHWC", input_name="pixels").validate()))
    finally:
        srv.shutdown()
        srv.server_close()
    assert res.returncode == 0 and "OWNED" in res.stdout, res.stdout + res.stderr
    direct = verify_claim(str(marked.ticket), marked.claim_file,
                          VerifyOptions(reveal=marked.seed_file))
    assert f"matches: {direct.evidence['matches']}" in res.stdout
    # Without the server's normalisation the inputs are wrong and far fewer match.
    assert wrong.evidence["matches"] < direct.evidence["matches"]


def test_cli_verify_against_serve_over_kserve_v2(marked):
    proc = subprocess.Popen([sys.executable, "-m", "ticketmark", "serve", "--model",
                             str(marked.ticket), "--port", "0", "--name", "stolen"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/v2/models/stolen/infer", line)
        assert url, line
        res = run_cli("verify", "--suspect", url.group(0), "--claim", marked.claim_file,
                      "--reveal", marked.seed_file)
        assert res.returncode == 0 and "trigger: OWNED" in res.stdout, res.stdout + res.stderr
        # Our server answers logits and labels: the verifier takes the logits (rank test).
        assert "rank points" in res.stdout, res.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _HostileV2(BaseHTTPRequestHandler):
    mode = "ok"
    calls = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = req["inputs"][0]["shape"][0]
        label = {"name": "label", "shape": [n], "datatype": "INT64", "data": [0] * n}
        scores = {"name": "s", "shape": [n, 10], "datatype": "FP32", "data": [0.0] * (n * 10)}
        type(self).calls += 1
        body = {
            "mixed": lambda: json.dumps({"outputs": [scores if self.calls % 2 else label]}),
            "ok": lambda: json.dumps({"outputs": [label]}),
            "huge_label": lambda: json.dumps({"outputs": [{**label, "data": [10**30] * n}]}),
            "long_int": lambda: '{"outputs": [{"data": [' + "9" * 5000 + "]}]}",
            "nested": lambda: '{"outputs": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "nan": lambda: json.dumps({"outputs": [{"name": "s", "shape": [n, 10],
                                                    "datatype": "FP32",
                                                    "data": [float("nan")] * (n * 10)}]}),
            "short": lambda: json.dumps({"outputs": [{**label, "shape": [n - 1],
                                                      "data": [0] * (n - 1)}]}),
            "no_outputs": lambda: json.dumps({"predictions": [0] * n}),
            "bad_shape": lambda: json.dumps({"outputs": [{**label, "shape": "x"}]}),
        }[self.mode]().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(("mode", "needle"), [
    ("huge_label", "outside"),
    ("long_int", "malformed JSON"),
    ("nested", "nested too deeply"),
    ("nan", "NaN"),
    ("short", "no output of"),
    ("no_outputs", "no 'outputs'"),
    ("bad_shape", "shape"),
    ("mixed", "scores for some batches and labels for others"),
])
def test_hostile_v2_answers_could_not_verify(tmp_path, mode, needle):
    claim, seed_file, _ = fresh_claim(TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8), tmp_path)
    handler = type("H", (_HostileV2,), {"mode": mode})
    srv, url = _serve(handler)
    try:
        v = verify_claim(url, claim, VerifyOptions(reveal=seed_file, timeout=5, batch_size=50))
        handler.mode = "ok"
        plain = verify_claim(url, claim, VerifyOptions(reveal=seed_file, timeout=5))
    finally:
        srv.shutdown()
        srv.server_close()
    assert v.status == UNVERIFIABLE and needle in v.reason, v.reason
    assert plain.status != UNVERIFIABLE  # the same server answering well gives a verdict


def test_bad_adapter_and_protocol_flags_are_one_line_errors(marked, tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text('{"layout": "CHWN"}')
    for args in (["--adapter", bad], ["--protocol", "grpc"], ["--input-mean", "x,y"]):
        one_line_error(run_cli("verify", "--suspect", "http://127.0.0.1:9/v2/models/m/infer",
                               "--claim", marked.claim_file, "--reveal", marked.seed_file,
                               *args))


def test_plain_weights_with_a_trigger_claim_say_what_to_do(marked, tmp_path):
    """A trigger check runs the model; a bare state dict names no architecture."""
    tm.save_state_dict(tmp_path / "plain.safetensors", marked.ticket)
    line = one_line_error(run_cli("verify", "--suspect", tmp_path / "plain.safetensors",
                                  "--claim", marked.claim_file, "--reveal", marked.seed_file))
    assert "does not say which network" in line and "http://" in line
