"""uvicorn serving the prediction app (``app``) on 127.0.0.1.

The socket is bound here, before uvicorn starts, so port 0 resolves to a known free port and
a port in use fails at once with ``OSError``. Beyond uvicorn's own limits (keep-alive, header
size, listen backlog) this adds what it lacks against slow clients:

* a deadline for a connection's request headers, so clients that open a connection and drip
  (or send nothing) are closed instead of held forever;
* connection slots that slow clients cannot hold: at ``max_connections`` open connections
  (or ``max_per_peer`` from one address), a new connection closes the oldest one that is
  not in a request (waiting for its headers, or idle between requests), else the oldest
  still sending its body after a second; only when every connection is answering is the
  new one refused (503). uvicorn's own limit refused new requests instead, so 300
  slowloris connections kept legitimate clients at 503 (issue 30);
* TCP_NODELAY on every accepted connection, so small responses are not held back by
  Nagle's algorithm.

``make_server`` / ``serve_in_thread`` / ``shutdown`` / ``server_close`` keep the interface of
the stdlib server this replaced, for tests, the demo and in-process verification.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from typing import Any

import uvicorn
from torch import nn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ticketmark.serving.app import MAX_BATCH, MAX_BODY, Limits, Predictor, make_app

HOST = "127.0.0.1"
MAX_HEADER_BYTES = 16 * 1024

__all__ = ["HOST", "MAX_BATCH", "MAX_BODY", "Limits", "PredictionServer", "make_server",
           "serve_in_thread"]


HEADER_GRACE = 0.5  # s a new connection may take to send its headers before eviction
SLOW_BODY_GRACE = 1.0  # s a request may take to send its body before it can be evicted
REBALANCE_DELAY = 0.02  # s: let a burst's requests be read before choosing whom to close


class _Slots:
    """Connection accounting shared by one server's connections (event-loop thread only).

    Over a limit, the stalled connections are closed oldest first, but only after
    ``REBALANCE_DELAY``: asyncio accepts a whole burst of connections before it reads any
    of them, so choosing at once would close a normal client whose request is already
    waiting in its socket, just because the burst made it look old. A connection is
    stalled once it has waited ``HEADER_GRACE`` for its headers (or is idle between
    requests), or sent its body for ``SLOW_BODY_GRACE``; while the only excess is younger,
    the check repeats until it is not.
    """

    def __init__(self, max_connections: int, max_per_peer: int):
        self.max_connections, self.max_per_peer = max_connections, max_per_peer
        self.peers: Counter[str] = Counter()
        self.evicted = 0
        self._scheduled = False

    def over(self, connections: set[Any]) -> bool:
        return len(connections) > self.max_connections or any(
            n > self.max_per_peer for n in self.peers.values())

    def schedule(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_later(REBALANCE_DELAY, self.rebalance, connections)

    def rebalance(self, connections: set[Any]) -> None:
        self._scheduled = False
        now = time.monotonic()
        stalled = sorted((key, id(c), c) for c in list(connections)
                         if isinstance(c, _HeaderDeadlineH11)
                         and (key := c._stalled(now)) is not None)
        victims = [c for _, _, c in stalled]
        for peer in [p for p, n in self.peers.items() if n > self.max_per_peer]:
            own = [c for c in victims if c._peer == peer]
            for conn in own[: self.peers[peer] - self.max_per_peer]:
                self._evict(conn)
        excess = len(connections) - self.max_connections
        for conn in [c for c in victims if c._counted][: max(0, excess)]:
            self._evict(conn)
        if self.over(connections):  # the rest are busy or too young yet: look again soon
            self._scheduled = True
            asyncio.get_running_loop().call_later(0.1, self.rebalance, connections)

    def _evict(self, conn: _HeaderDeadlineH11) -> None:
        self.evicted += 1
        conn._release()
        conn.transport.close()


class _HeaderDeadlineH11(H11Protocol):
    """h11 connection that closes if a request's headers are not complete in time; over
    the connection limits, stalled connections make room (``_Slots``).

    The deadline starts when the connection opens and again after every response; it is
    met once a new request cycle has started (headers parsed). uvicorn's keep-alive timer
    only runs between requests and is cancelled by the first byte of the next one, so
    without this a client that sends half a request line holds its connection forever.
    """

    header_timeout = 10.0
    slots: _Slots | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = time.monotonic()
        self._peer = self.client[0] if self.client else ""
        self._counted = False
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, which an
        # accepted socket of a plain socket() is not (proto 0): set it here, or every
        # response waits ~40 ms for the client's delayed ACK (Nagle).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slots = self.slots
        if slots is not None:
            slots.peers[self._peer] += 1
            self._counted = True
            if slots.over(self.connections):
                slots.schedule(self.loop, self.connections)
        self._arm()

    def _stalled(self, now: float) -> tuple[int, float] | None:
        """(preference, start) if this connection may be closed for a newcomer."""
        if not self._counted or self.transport.is_closing():
            return None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # waiting for headers, or idle
            return (0, self._since) if now - self._since > HEADER_GRACE else None
        if cycle.more_body and now - self._since > SLOW_BODY_GRACE:
            return (1, self._since)  # still sending its body after the grace period
        return None

    def _release(self) -> None:
        if getattr(self, "_counted", False) and self.slots is not None:
            self._counted = False
            self.slots.peers[self._peer] -= 1
            if self.slots.peers[self._peer] <= 0:
                del self.slots.peers[self._peer]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._since = time.monotonic()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        self._release()
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


def _protocol_class(header_timeout: float, slots: _Slots | None = None) -> type[H11Protocol]:
    return type("HeaderDeadlineH11", (_HeaderDeadlineH11,), {"header_timeout": header_timeout,
                                                            "slots": slots})


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
        self.slots = _Slots(limits.max_connections, limits.max_per_peer)
        config = uvicorn.Config(
            make_app(predictor, limits), http=_protocol_class(limits.timeout, self.slots),
            lifespan="off", log_config=None, access_log=not quiet, server_header=False,
            # Connections are bounded by _Slots (closing stalled ones); uvicorn's limit
            # refuses requests instead (503), so it only backs that up, far above.
            limit_concurrency=4 * limits.max_connections, backlog=limits.backlog,
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
