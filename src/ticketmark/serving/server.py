"""uvicorn serving the prediction app (``app``) on 127.0.0.1.

The socket is bound here, before uvicorn starts, so port 0 resolves to a known free port and
a port in use fails at once with ``OSError``. Beyond uvicorn's own limits (connections,
keep-alive, header size, listen backlog) this adds the one it lacks: a deadline for a
connection's request headers, so clients that open a connection and drip (or send nothing)
are closed instead of held forever; and TCP_NODELAY on every accepted connection, so small
responses are not held back by Nagle's algorithm.

``make_server`` / ``serve_in_thread`` / ``shutdown`` / ``server_close`` keep the interface of
the stdlib server this replaced, for tests, the demo and in-process verification.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import uvicorn
from torch import nn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ticketmark.serving.app import MAX_BATCH, MAX_BODY, Limits, Predictor, make_app

HOST = "127.0.0.1"
MAX_HEADER_BYTES = 16 * 1024

__all__ = ["HOST", "MAX_BATCH", "MAX_BODY", "Limits", "PredictionServer", "make_server",
           "serve_in_thread"]


class _HeaderDeadlineH11(H11Protocol):
    """h11 connection that closes if a request's headers are not complete in time.

    The deadline starts when the connection opens and again after every response; it is
    met once a new request cycle has started (headers parsed). uvicorn's keep-alive timer
    only runs between requests and is cancelled by the first byte of the next one, so
    without this a client that sends half a request line holds its connection forever.
    """

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, which an
        # accepted socket of a plain socket() is not (proto 0): set it here, or every
        # response waits ~40 ms for the client's delayed ACK (Nagle).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        old = getattr(self, "_header_deadline", None)
        if old is not None:
            old.cancel()
        cycle = self.cycle
        self._header_deadline = self.loop.call_later(self.header_timeout + self.timeout_keep_alive
                                                     if cycle is not None else
                                                     self.header_timeout,
                                                     self._check_headers, cycle)

    def _check_headers(self, cycle_at_arm: Any) -> None:
        waiting = self.cycle is cycle_at_arm  # no new request began since the deadline
        if waiting and not self.transport.is_closing():
            self.transport.close()


def _protocol_class(header_timeout: float) -> type[H11Protocol]:
    return type("HeaderDeadlineH11", (_HeaderDeadlineH11,), {"header_timeout": header_timeout})


class PredictionServer:
    """A bound socket and the uvicorn server that will answer on it."""

    def __init__(self, predictor: Predictor, limits: Limits, port: int = 0,
                 quiet: bool = True):
        self.predictor, self.limits = predictor, limits.validate()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((HOST, port))
            self.socket.listen(limits.backlog)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.INFO)
        config = uvicorn.Config(
            make_app(predictor, limits), http=_protocol_class(limits.timeout),
            lifespan="off", log_config=None, access_log=not quiet, server_header=False,
            limit_concurrency=limits.max_connections, backlog=limits.backlog,
            timeout_keep_alive=int(max(1, limits.keep_alive)),
            timeout_graceful_shutdown=2, h11_max_incomplete_event_size=MAX_HEADER_BYTES)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    @property
    def url(self) -> str:
        """The ticketmark-protocol endpoint (``/predict``)."""
        return f"{self.base_url}/predict"

    @property
    def v2_url(self) -> str:
        """The Open Inference Protocol endpoint of the served model."""
        return f"{self.base_url}/v2/models/{self.predictor.name}/infer"

    def serve_forever(self) -> None:
        """Answer until ``shutdown`` (or SIGINT/SIGTERM when run in the main thread)."""
        self._server.run(sockets=[self.socket])

    def wait_started(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not self._server.started and time.monotonic() < end:
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError("the server thread stopped while starting")
            time.sleep(0.01)

    def shutdown(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def server_close(self) -> None:
        self.socket.close()


def make_server(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                port: int = 0, *, name: str = "ticket", quiet: bool = True,
                limits: Limits | None = None, **overrides: Any) -> PredictionServer:
    """Bind (port 0: a free port) on 127.0.0.1; ``serve_forever`` or ``serve_in_thread``.

    ``overrides`` set single fields of ``Limits`` (``max_body=...``, ``max_batch=...``).
    """
    lim = limits or Limits()
    for key, value in overrides.items():
        if not hasattr(lim, key):
            raise TypeError(f"unknown server limit {key!r}")
        setattr(lim, key, value)
    return PredictionServer(Predictor(model, input_shape, num_classes, name), lim, port, quiet)


def serve_in_thread(server: PredictionServer) -> threading.Thread:
    """Answer from a daemon thread (tests, demo, in-process checks); stop with ``shutdown``."""
    thread = threading.Thread(target=server.serve_forever, name="ticketmark-serve",
                              daemon=True)
    server._thread = thread
    thread.start()
    server.wait_started()
    return thread
