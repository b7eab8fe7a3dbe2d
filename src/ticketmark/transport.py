"""One HTTP exchange under one deadline: the transport every network path of ticketmark uses.

A peer that wants a check to hang does not refuse or reset; it answers slowly, one byte at a
time, each byte just inside any per-read timeout. So time is bounded twice: ``timeout`` per
socket operation (connect, send, each read), and a ``Deadline`` for the whole exchange,
shared by every request, retry and backoff of one task. The deadline is checked before each
socket read, and each read waits at most the time left, so a dripping peer is cut off when
the deadline passes, whatever the protocol on top (ticketmark's ``/predict``, KServe v2,
RFC 3161 time stamps). Redirects are never followed; the answer body is capped.

``DeadlinePassed`` and ``TransportError`` are the only exceptions ``request`` raises;
callers turn them into their own verdicts (COULD NOT VERIFY, one error line).
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
from dataclasses import dataclass, field
from typing import Any

MAX_HEADERS = 100


class DeadlinePassed(Exception):
    """The whole exchange's deadline ran out."""


class TransportError(Exception):
    """The request could not be completed. ``kind``: "timeout" (a per-operation timeout),
    "unreachable" (refused, reset, closed early) or "malformed" (the peer spoke broken
    HTTP); the first two are worth a retry. ``detail``: what happened, one safe line."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail

    @property
    def transient(self) -> bool:
        return self.kind != "malformed"


class Deadline:
    """A point in time every network operation of one task must finish by."""

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ValueError(f"deadline must be positive, got {seconds}")
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self) -> float:
        """Seconds left; ``DeadlinePassed`` if none."""
        left = self.left()
        if left <= 0:
            raise DeadlinePassed()
        return left

    def sleep(self, seconds: float) -> None:
        """Sleep, but never past the deadline."""
        time.sleep(max(0.0, min(seconds, self.left())))


@dataclass
class Reply:
    status: int
    reason: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _DeadlineReader(io.RawIOBase):
    """Socket reads that each wait at most min(timeout, time left before the deadline)."""

    def __init__(self, sock: socket.socket, deadline: Deadline, timeout: float,
                 plain: io.IOBase):
        super().__init__()
        self._sock, self._deadline, self._timeout = sock, deadline, timeout
        self._plain = plain  # http.client's own reader: holds the socket open until closed

    def close(self) -> None:
        self._plain.close()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline.check()
        self._sock.settimeout(min(self._timeout, left))
        return self._sock.recv_into(buffer)


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, deadline: Deadline, timeout: float,
                 **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline, timeout, self.fp))


def one_line(exc: BaseException | str) -> str:
    """A peer-controlled message made safe for a verdict line: one line, printable, short."""
    raw = exc if isinstance(exc, str) else str(getattr(exc, "reason", None) or exc
                                               or type(exc).__name__)
    text = "".join(c if c.isprintable() else " " for c in raw[:400])
    return " ".join(text.split())[:200]


def request(method: str, scheme: str, host: str, port: int | None, target: str,
            body: bytes | None, headers: dict[str, str], timeout: float, deadline: Deadline,
            max_body: int) -> Reply:
    """One request (``Connection: close``), its answer read under ``deadline``.

    The body of any status is read (up to ``max_body`` + 1 bytes: the caller sees an
    over-long body by its length); 3xx are returned like any status, never followed.
    """
    left = deadline.check()
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=min(timeout, left))
    conn.response_class = functools.partial(_Response, deadline=deadline,  # type: ignore
                                            timeout=timeout)
    try:
        conn.request(method, target, body=body, headers={**headers, "Connection": "close"})
        resp = conn.getresponse()
        status, reason = resp.status, resp.reason or ""
        names = resp.getheaders()[:MAX_HEADERS]
        data = resp.read(max_body + 1)
    except DeadlinePassed:
        raise
    except TimeoutError:
        if deadline.left() <= 0:
            raise DeadlinePassed() from None
        raise TransportError("timeout", f"{timeout:g} s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise TransportError("unreachable", one_line(exc)) from None
    except ValueError as exc:  # e.g. a chunk size that is not hex
        raise TransportError("malformed", one_line(exc)) from None
    finally:
        conn.close()
    return Reply(status, one_line(reason)[:80], data,
                 {k.lower(): v for k, v in reversed(names)})
