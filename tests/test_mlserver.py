"""Black-box verification against a real third-party KServe v2 server: Seldon MLServer.

MLServer pins dependencies that clash with ticketmark's (older starlette and protobuf, a
gRPC and OpenTelemetry stack), so it lives in its own virtual environment and this test runs
only when one is found: ``TICKETMARK_MLSERVER=/path/to/venv/bin/mlserver`` or ``mlserver`` on
PATH. Set one up with::

    python3.11 -m venv /tmp/mlserver-venv && /tmp/mlserver-venv/bin/pip install mlserver
    TICKETMARK_MLSERVER=/tmp/mlserver-venv/bin/mlserver python -m pytest -m slow \
        tests/test_mlserver.py

The model runs in an MLServer custom runtime (the documented way to serve a PyTorch
model), which borrows torch and ticketmark from this interpreter by appending their paths.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import ticketmark
from tests.trigger_support import marked_conv
from ticketmark.ownership.verdict import OWNED, VerifyOptions
from ticketmark.ownership.verify import verify_claim

MLSERVER = os.environ.get("TICKETMARK_MLSERVER") or shutil.which("mlserver")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not MLSERVER, reason="no mlserver (set TICKETMARK_MLSERVER)")]

RUNTIME = '''
import sys
sys.path.extend({paths!r})
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TicketRuntime(MLModel):
    async def load(self) -> bool:
        from ticketmark.io import load_ticket

        self._net = load_ticket(self.settings.parameters.uri).build().eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        import torch

        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        with torch.no_grad():
            logits = self._net(torch.from_numpy(x)).numpy()
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("logits", logits)])
'''


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_verify_against_mlserver(conv_ticket, tmp_path):
    marked = marked_conv(conv_ticket)
    site = str(Path(torch.__file__).resolve().parents[1])
    src = str(Path(ticketmark.__file__).resolve().parents[1])
    model_dir = tmp_path / "stolen"
    model_dir.mkdir()
    (model_dir / "runtime.py").write_text(RUNTIME.format(paths=[site, src]))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "stolen", "implementation": "runtime.TicketRuntime",
        "parameters": {"uri": str(marked.ticket)}}))
    http_port, grpc_port, metrics_port = _free_ports(3)
    (tmp_path / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": 0, "metrics_endpoint": None}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([MLSERVER, "start", str(tmp_path)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v2/models/stolen/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("MLServer did not become ready: " + (proc.stderr.read()
                                                                 if proc.poll() is not None
                                                                 else "timeout"))
            time.sleep(1)
        url = f"{base}/v2/models/stolen/infer"
        v = verify_claim(url, marked.claim_file, VerifyOptions(reveal=marked.seed_file,
                                                               timeout=30))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    direct = verify_claim(str(marked.ticket), marked.claim_file,
                          VerifyOptions(reveal=marked.seed_file))
    assert v.status == OWNED, v.reason
    assert v.evidence["matches"] == direct.evidence["matches"]
