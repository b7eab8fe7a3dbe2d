"""``ThreadingHTTPServer`` serving a model's predictions on 127.0.0.1.

Endpoints: ``POST /predict`` (see ``protocol``) and ``GET /health`` (input shape, classes).
Requests are bounded (``max_body`` bytes, ``max_batch`` inputs); inference runs under a
lock because one PyTorch model is shared by all handler threads and the CPU is the
bottleneck anyway. Every failure becomes a JSON ``{"error": ...}`` with a 4xx/5xx status,
never a dropped connection.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from torch import nn

from ticketmark.serving.protocol import BadRequest, decode_inputs

HOST = "127.0.0.1"
MAX_BODY = 32 * 1024 * 1024
MAX_BATCH = 1024


class PredictionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                 port: int = 0, max_body: int = MAX_BODY, max_batch: int = MAX_BATCH,
                 quiet: bool = True):
        super().__init__((HOST, port), _Handler)
        self.model = model.eval()
        self.input_shape, self.num_classes = input_shape, num_classes
        self.max_body, self.max_batch, self.quiet = max_body, max_batch, quiet
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/predict"

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int) -> dict[str, Any]:
        with self.lock:
            logits = self.model(x).float()
        out: dict[str, Any] = {"labels": logits.argmax(1).tolist()}
        if top_k:
            probs = torch.softmax(logits, 1)
            vals, idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
            out["top_k"] = [[[int(i), round(float(v), 6)] for i, v in zip(ri, rv, strict=True)]
                            for ri, rv in zip(idx.tolist(), vals.tolist(), strict=True)]
        return out


class _Handler(BaseHTTPRequestHandler):
    server: PredictionServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib handler name
        if self.path.rstrip("/") != "/health":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}"})
            return
        self._send(HTTPStatus.OK, {"status": "ok", "input_shape": list(self.server.input_shape),
                                   "num_classes": self.server.num_classes})

    def do_POST(self) -> None:  # noqa: N802 - stdlib handler name
        if self.path.rstrip("/") != "/predict":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}"})
            return
        try:
            length = self._content_length()
            body = self.rfile.read(length)
            x, top_k = decode_inputs(body, self.server.input_shape, self.server.max_batch)
            out = self.server.predict(torch.from_numpy(x), top_k)
        except BadRequest as exc:
            self.close_connection = True
            self._send(exc.status, {"error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - answer, never drop the connection
            self.close_connection = True
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})
            return
        self._send(HTTPStatus.OK, out)

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            length = int(raw)
        except ValueError:
            raise BadRequest(400, "Content-Length is not an integer") from None
        if length < 0:
            raise BadRequest(400, "Content-Length is negative")
        if length > self.server.max_body:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"body of {length} bytes exceeds the limit {self.server.max_body}")
        return length


def make_server(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                port: int = 0, **kwargs: Any) -> PredictionServer:
    """Bind (port 0: a free port) on 127.0.0.1; call ``serve_forever`` to answer."""
    return PredictionServer(model, input_shape, num_classes, port, **kwargs)


def serve_in_thread(server: PredictionServer) -> threading.Thread:
    """Answer requests from a daemon thread (tests, benchmarks); stop with ``shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="ticketmark-serve",
                              daemon=True)
    thread.start()
    return thread
