"""Shared pieces of the hostile-input tests (not a test module).

``cli`` runs the real command-line entry point (``ticketmark.cli.main.main``, the function
the ``ticketmark`` script calls) inside the test process, so a property test can drive it
hundreds of times and a misbehaving HTTP server running in a test thread sees the same
requests a user's ``ticketmark verify`` would send.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ticketmark.ownership.claims import save_claim
from ticketmark.ownership.trigger.generate import TriggerParams

TRIGGER = TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8)  # conv2 on digits takes 1x8x8


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def assert_verdict_or_error(self, verdicts: tuple[int, ...] = (0, 1)) -> None:
        """The property every hostile input must meet: a verdict, or one error line."""
        assert "Traceback" not in self.out + self.err, self.err
        assert self.code != 3, self.err
        if self.code == 2:
            lines = [ln for ln in self.err.strip().splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        else:
            assert self.code in verdicts, (self.code, self.out, self.err)

    def one_error(self) -> str:
        self.assert_verdict_or_error(verdicts=())
        assert self.code == 2
        return self.err.strip()


def cli(*args: Any, env: dict[str, str] | None = None) -> Outcome:
    """Run ``ticketmark ARGS`` in-process through the CLI entry point."""
    from ticketmark.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.pop("TICKETMARK_DEBUG", None)
    os.environ.update(env or {})
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Outcome(code, out.getvalue(), err.getvalue())


def copy_ticket(src: Path, dst: Path) -> Path:
    """A copy of ticket ``src`` (NAME.safetensors + NAME.json) at ``dst``/ticket.*."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst / "ticket.safetensors")
    shutil.copy(src.with_suffix(".json"), dst / "ticket.json")
    return dst / "ticket.safetensors"


def edit_sidecar(ticket: Path, **changes: Any) -> None:
    side = ticket.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


def trigger_claim(root: Path) -> tuple[Path, Path]:
    """A signed trigger claim (fresh seed, nothing embedded) and its seed file."""
    from tests.trigger_support import fresh_claim

    root.mkdir(parents=True, exist_ok=True)
    claim, seed_file, _ = fresh_claim(TRIGGER, root)
    return save_claim(root / "trigger.claim.json", claim), seed_file


class HostileServer:
    """An HTTP server on 127.0.0.1 whose POST answers a test chooses, in threads.

    ``answer(handler, n_inputs)`` writes the whole response. ``stop`` ends any handler
    still dripping, so a test never leaves a thread running past its own end.
    """

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, int], None]):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _count(self) -> None:
                with owner.lock:
                    owner.hits += 1

            def do_POST(self) -> None:  # noqa: N802
                self._count()
                length = min(int(self.headers.get("Content-Length", 0)), 1 << 24)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:  # not JSON (a time-stamp query, a binary tensor)
                    body = {}
                n = _batch_size(body)
                answer(self, n)

            def do_GET(self) -> None:  # noqa: N802
                self._count()
                answer(self, -1)

        self.hits = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/predict"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


def _batch_size(body: dict[str, Any]) -> int:
    import base64

    import numpy as np

    try:
        return len(np.load(io.BytesIO(base64.b64decode(body["npy"])), allow_pickle=False))
    except Exception:  # noqa: BLE001 - a test server: any odd request is "size unknown"
        return -1


def send(handler: BaseHTTPRequestHandler, status: int, payload: bytes,
         headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class Slowloris:
    """``n`` connections that send request headers a line at a time and never finish them,
    from ``source`` (a loopback address), reconnecting whenever the server closes one.
    With ``body``: complete headers, then a body dripped a byte at a time instead.

    Runs in one thread with non-blocking sockets until ``stop``; ``opened`` counts every
    connection made (the first ``n`` and each reconnect), ``closed_by_server`` those the
    server closed. Bounded: ``n`` sockets at once, one small send each per ``interval``.
    """

    def __init__(self, port: int, n: int = 300, source: str = "127.0.0.1",
                 interval: float = 0.5, body: bool = False):
        self.port, self.n, self.source, self.interval, self.body = port, n, source, interval, body
        self.opened = self.closed_by_server = 0
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Slowloris:
        self.thread.start()
        self.ready.wait(60)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.thread.join(30)

    def _connect(self) -> Any:
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.source, 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
            head = b"POST /predict HTTP/1.1\r\nHost: x\r\n"
            if self.body:
                head += b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            s.sendall(head)
        except OSError:
            s.close()
            return None
        s.setblocking(False)
        self.opened += 1
        return s

    def _run(self) -> None:
        import time

        socks = [self._connect() for _ in range(self.n)]
        self.ready.set()
        while not self.stopped.wait(self.interval):
            for i, s in enumerate(socks):
                if s is None:
                    socks[i] = self._connect()
                    continue
                try:
                    if s.recv(4096) == b"":  # the server closed it (or answered 408/503)
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_by_server += 1
                    s.close()
                    socks[i] = self._connect()
                    continue
                try:
                    s.send(b" " if self.body else b"X-Slow: %d\r\n" % int(time.time()))
                except OSError:
                    self.closed_by_server += 1
                    s.close()
                    socks[i] = self._connect()
        for s in socks:
            if s is not None:
                s.close()
