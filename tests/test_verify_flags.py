"""``verify``'s endpoint flags: every adapter-file field has a flag, and a flag given beside
``--adapter`` overrides that field of the file."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from tests.conftest import one_line_error, run_cli
from tests.trigger_support import marked_conv
from ticketmark.io import load_ticket


@pytest.fixture(scope="module")
def marked(conv_ticket):
    return marked_conv(conv_ticket)


class _NamedV2(BaseHTTPRequestHandler):
    """A v2 server whose input tensor is called "pixels" (anything else: 400) and whose
    first output is not the model's: only ``--output scores`` reads the right one."""

    model: torch.nn.Module

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        t = req["inputs"][0]
        if t["name"] != "pixels" or t["datatype"] != "FP32":
            self._send(400, json.dumps({"error": f"unexpected input {t['name']}"}).encode())
            return
        x = np.asarray(t["data"], np.float32).reshape(t["shape"])
        with torch.no_grad():
            out = self.model(torch.from_numpy(x)).numpy()
        decoy = np.roll(out, 1, axis=1)  # same shape, other labels
        self._send(200, json.dumps({"model_name": "m", "outputs": [
            {"name": "decoy", "shape": list(decoy.shape), "datatype": "FP32",
             "data": decoy.reshape(-1).tolist()},
            {"name": "scores", "shape": list(out.shape), "datatype": "FP32",
             "data": out.reshape(-1).tolist()}]}).encode())


@pytest.fixture(scope="module")
def named_server(marked):
    handler = type("H", (_NamedV2,), {"model": load_ticket(marked.ticket).build().eval()})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m/infer"
    srv.shutdown()
    srv.server_close()


def _verify(marked, url, *flags):
    return run_cli("verify", "--suspect", url, "--claim", marked.claim_file, "--reveal",
                   marked.seed_file, "--timeout", "5", *flags)


def test_input_name_and_output_flags_reach_the_server(marked, named_server, tmp_path):
    owned = _verify(marked, named_server, "--input-name", "pixels", "--output", "scores")
    assert owned.returncode == 0 and "OWNED" in owned.stdout, owned.stdout + owned.stderr
    # The file names the wrong output; the flag beside it wins.
    adapter = tmp_path / "adapter.toml"
    adapter.write_text('input_name = "pixels"\noutput = "decoy"\n')
    flagged = _verify(marked, named_server, "--adapter", adapter, "--output", "scores")
    assert flagged.returncode == 0 and "OWNED" in flagged.stdout, flagged.stdout
    # Without the flags: the default input name is refused by the server, and the decoy
    # output (the first that fits) is the wrong answer.
    unnamed = _verify(marked, named_server, "--output", "scores")
    assert unnamed.returncode == 1 and "COULD NOT VERIFY" in unnamed.stdout, unnamed.stdout
    decoy = _verify(marked, named_server, "--adapter", adapter)
    assert decoy.returncode == 1 and "NOT OWNED" in decoy.stdout, decoy.stdout


def test_bad_datatype_flag_is_one_line_error(marked, named_server):
    err = one_line_error(_verify(marked, named_server, "--input-datatype", "COMPLEX"))
    assert "datatype" in err
