"""The ASGI application behind ``ticketmark serve``: both protocols, every limit enforced.

Routes:

* ``POST /predict`` and ``GET /health``: ticketmark's own JSON (``protocol``);
* ``POST /v2/models/{name}/infer``, ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``,
  ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``: the Open Inference
  Protocol (KServe v2, ``oip``), so standard clients and ``verify`` speak to it alike.

Why it is built this way: a prediction server in this project is also a target (and a
stand-in for the thief's), so each request is bounded before it costs anything. Its body is
read against a deadline and a byte limit (408, 413), and counted as it arrives against one
budget for every body in memory (``max_pending`` x ``max_body``; past it, 503). Only a
complete body is admitted to the queue for the workers (fewer than ``max_pending`` at once;
others wait up to ``timeout``, then 503), so clients that send their bodies slowly hold
memory they actually sent, never a queue slot that legitimate requests wait for. Parsing
plus inference run on ``workers`` threads so the event loop keeps accepting and timing out
connections. Peak memory is about ``max_pending`` bodies plus ``workers`` parsed batches.
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from typing import Any

import anyio
import numpy as np
import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from torch import nn

from ticketmark.serving import oip
from ticketmark.serving.limits import MAX_BATCH, MAX_BODY, Limits
from ticketmark.serving.protocol import BadRequest, decode_inputs

__all__ = ["MAX_BATCH", "MAX_BODY", "Limits", "Predictor", "make_app"]

class Predictor:
    """One model shared by the worker threads; inference is serialised under a lock."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                 name: str = "ticket"):
        self.model = model.eval()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.name = name
        self._lock = threading.Lock()

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.model(torch.from_numpy(x)).float().numpy()
        if out.ndim != 2 or out.shape[0] != len(x):
            raise BadRequest(500, f"the model returned shape {out.shape} for {len(x)} inputs")
        if not np.isfinite(out).all():
            raise BadRequest(500, "the model produced NaN or infinite scores")
        return out

    def own(self, body: bytes, max_batch: int) -> dict[str, Any]:
        """``POST /predict``: labels, and top-k probabilities when asked."""
        x, top_k = decode_inputs(body, self.input_shape, max_batch)
        logits = self.logits(x)
        out: dict[str, Any] = {"labels": logits.argmax(1).tolist()}
        if top_k:
            probs = torch.softmax(torch.from_numpy(logits), 1)
            vals, idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
            out["top_k"] = [[[int(i), round(float(v), 6)] for i, v in zip(ri, rv, strict=True)]
                            for ri, rv in zip(idx.tolist(), vals.tolist(), strict=True)]
        return out

    def v2(self, body: bytes, max_batch: int, header_length: str | None = None
           ) -> dict[str, Any] | Response:
        """``POST /v2/models/{name}/infer``, JSON or binary tensors (``oip``)."""
        x, names, rid = oip.decode_request(body, self.input_shape, max_batch, header_length)
        head, binary = oip.encode_response(self.name, self.logits(x), names, rid)
        if not binary:
            return head
        text = json.dumps(head, separators=(",", ":")).encode()
        return Response(text + binary, media_type="application/octet-stream",
                        headers={oip.BINARY_HEADER: str(len(text))})


def _error(status: int, message: str) -> JSONResponse:
    # Closing after an error: the rest of a refused body may still be on the wire.
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Connection": "close"})


class _Budget:
    """Bytes of request bodies held in memory, for all requests (event-loop thread only)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0

    def take(self, n: int) -> None:
        if self.used + n > self.total:
            raise BadRequest(503, f"busy: request bodies in memory reach {self.total} bytes")
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


async def _read_body(request: Request, limits: Limits, budget: _Budget) -> tuple[bytes, int]:
    """The (decoded) body and the bytes of ``budget`` it holds; nothing held on failure."""
    raw = request.headers.get("content-length")
    if raw is not None:
        if not raw.isdigit() or len(raw) > 18:
            raise BadRequest(400, "Content-Length is not a non-negative integer")
        if int(raw) > limits.max_body:
            raise BadRequest(413, f"body of {raw} bytes exceeds the limit {limits.max_body}")
    chunks, size, held = [], 0, 0
    try:
        try:
            async with asyncio.timeout(limits.timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limits.max_body:
                        raise BadRequest(413, f"body exceeds the limit {limits.max_body}")
                    budget.take(len(chunk))
                    held += len(chunk)
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(408, f"body not received within {limits.timeout:g} s") from None
        body = b"".join(chunks)
        chunks.clear()
        decoded = _decoded(body, request.headers.get("content-encoding"), limits)
        if decoded is not body:
            budget.take(len(decoded))
            held += len(decoded)
        return decoded, held
    except BaseException:
        budget.give(held)
        raise


def _decoded(body: bytes, encoding: str | None, limits: Limits) -> bytes:
    """A gzip/deflate request body inflated, never past ``max_body`` (no zip bombs)."""
    kind = (encoding or "identity").strip().lower()
    if kind == "identity":
        return body
    if kind not in ("gzip", "deflate"):
        raise BadRequest(415, f"Content-Encoding {kind[:20]!r} is not accepted (gzip, "
                              "deflate or none)")
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        out = inflater.decompress(body, limits.max_body + 1)
    except zlib.error:
        raise BadRequest(400, f"body is not valid {kind} data") from None
    if len(out) > limits.max_body or inflater.unconsumed_tail:
        raise BadRequest(413, f"body inflates beyond the limit {limits.max_body}")
    return out


def make_app(predictor: Predictor, limits: Limits | None = None) -> Starlette:
    limits = (limits or Limits()).validate()
    admitted = asyncio.Semaphore(limits.max_pending)
    bodies = _Budget(limits.max_pending * limits.max_body)
    workers = anyio.CapacityLimiter(limits.workers)

    async def run(request: Request, work: Any) -> Response:
        held = 0
        try:
            body, held = await _read_body(request, limits, bodies)
            try:
                async with asyncio.timeout(limits.timeout):
                    await admitted.acquire()
            except TimeoutError:
                return _error(503, f"busy: no free slot within {limits.timeout:g} s")
            try:
                result = await anyio.to_thread.run_sync(work, body, limits.max_batch,
                                                        limiter=workers)
            finally:
                admitted.release()
            return result if isinstance(result, Response) else JSONResponse(result)
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; uvicorn drops it
        except Exception as exc:  # noqa: BLE001 - answer, never a traceback to the log
            return _error(500, f"internal error ({type(exc).__name__})")
        finally:
            bodies.give(held)

    async def predict(request: Request) -> Response:
        return await run(request, predictor.own)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "input_shape": list(predictor.input_shape),
                             "num_classes": predictor.num_classes,
                             "protocols": ["ticketmark", "kserve-v2"],
                             "model_name": predictor.name})

    infer_path = f"/v2/models/{predictor.name}/infer"

    def _model(request: Request) -> Response | None:
        name = request.path_params["name"]
        if name != predictor.name:
            return _error(404, f"no model named {name[:100]!r}; this server has "
                               f"{predictor.name!r} (POST {infer_path})")
        return None

    async def v2_infer(request: Request) -> Response:
        header_length = request.headers.get(oip.BINARY_HEADER)
        return _model(request) or await run(
            request, lambda body, max_batch: predictor.v2(body, max_batch, header_length))

    async def v2_model(request: Request) -> Response:
        return _model(request) or JSONResponse(oip.metadata(
            predictor.name, predictor.input_shape, predictor.num_classes))

    async def v2_model_ready(request: Request) -> Response:
        return _model(request) or JSONResponse({"name": predictor.name, "ready": True})

    async def v2_server(request: Request) -> Response:
        from ticketmark import __version__

        return JSONResponse({"name": "ticketmark", "version": __version__, "extensions": []})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if status == 404:
            detail = (f"no such endpoint {request.url.path[:200]}; this server answers "
                      f"POST /predict and POST {infer_path} (model {predictor.name!r})")
        return _error(status, str(detail))

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/predict/", predict, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                     )
