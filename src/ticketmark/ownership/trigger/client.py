"""Query a suspect's prediction endpoint, trusting nothing it sends back.

The suspect is run by the party accused of theft, so every response is validated: JSON
(bounded in size, nesting and number width), an object, ``labels`` a list of exactly as
many integers in range as inputs sent. Network trouble (refused connection, timeout, 5xx,
429) is retried with exponential backoff; anything else fails at once. Every failure is an
``EndpointError`` whose message becomes the "could not verify" reason: a broken endpoint
must never look like a negative (or positive) verdict.

Time is bounded twice: ``timeout`` per socket operation, and ``deadline`` for the whole
exchange (every batch, retry and backoff), whatever the protocol: both protocols run their
batches through ``run_batches``, on ``ticketmark.transport``'s one ``Deadline``. A server
that drips one byte a second never trips a per-read timeout; the deadline is checked before
each read, and each read waits at most the time left. Redirects are never followed: a 3xx
is COULD NOT VERIFY, because a redirected POST turns into a GET without the inputs on a
server nobody named. A 4xx answer's own error message (bounded, one printable line) is
part of the reason, so "no model named 'x' (this server has 'ticket')" reaches the user.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticketmark.errors import TicketmarkError
from ticketmark.serving.protocol import encode_npy
from ticketmark.transport import Deadline, DeadlinePassed, Reply, TransportError, one_line, request

MAX_RESPONSE = 8 * 1024 * 1024
TRANSIENT_STATUS = (429, 500, 502, 503, 504)


class EndpointError(Exception):
    """The endpoint could not be queried, or answered something unusable."""


class _Transient(Exception):
    """A failure worth retrying (refused, reset, per-request timeout, 5xx, 429)."""


@dataclass
class ClientOptions:
    batch_size: int = 50
    timeout: float = 10.0  # seconds per socket operation (connect, send, each read)
    max_queries: int = 10_000  # most inputs sent in total
    retries: int = 2  # extra attempts after a transient failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    deadline: float = 300.0  # seconds for the whole exchange, retries included
    adapter: Any = None  # adapter.InputAdapter: protocol, input layout and normalisation


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int | None
    target: str  # path and query sent in the request line

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}{self.target}"


def parse_endpoint(suspect: str) -> Endpoint:
    """``http://host:port`` or ``.../predict``; a bare host gets the ``/predict`` path.

    A malformed URL is the verifier's own typo, so it is a ``TicketmarkError`` (exit 2).
    """
    try:
        parts = urllib.parse.urlsplit(suspect)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise TicketmarkError(f"not a valid endpoint URL: {suspect[:200]!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TicketmarkError(f"not an http(s) URL: {suspect[:200]!r}")
    if any(c in suspect for c in "\r\n\t ") or parts.username or parts.password:
        raise TicketmarkError(f"endpoint URL may hold no spaces or credentials: "
                              f"{suspect[:200]!r}")
    path = parts.path if parts.path not in ("", "/") else "/predict"
    target = path + (f"?{parts.query}" if parts.query else "")
    return Endpoint(parts.scheme, host, port, target)


def endpoint_url(suspect: str) -> str:
    return parse_endpoint(suspect).url


def _server_message(reply: Reply) -> str:
    """The error text a server put in its answer (``{"error": ...}``), made safe."""
    try:
        obj = json.loads(reply.body[:4096])
    except (ValueError, RecursionError, UnicodeDecodeError):
        return ""
    msg = obj.get("error") if isinstance(obj, dict) else None
    return f": {one_line(msg)}" if isinstance(msg, str) and msg.strip() else ""


def _post(endpoint: Endpoint, payload: bytes, headers: dict[str, str], timeout: float,
          deadline: Deadline) -> Reply:
    """One POST, no redirects; _Transient, DeadlinePassed or EndpointError on failure."""
    try:
        reply = request("POST", endpoint.scheme, endpoint.host, endpoint.port, endpoint.target,
                        payload, {"Content-Type": "application/json", **headers}, timeout,
                        deadline, MAX_RESPONSE)
    except TransportError as exc:
        if exc.kind == "timeout":
            raise _Transient(f"endpoint did not answer within {exc.detail}") from None
        if exc.kind == "unreachable":
            raise _Transient(f"cannot reach endpoint: {exc.detail}") from None
        raise EndpointError(f"endpoint answered malformed HTTP ({exc.detail})") from None
    status = reply.status
    if 300 <= status < 400:
        where = one_line(reply.header("Location") or "")[:120]
        raise EndpointError(f"endpoint answered a redirect (HTTP {status} to "
                            f"{where!r}); redirects are not followed: give the final URL")
    if status in TRANSIENT_STATUS:
        raise _Transient(f"endpoint answered HTTP {status} {reply.reason}")
    if status != 200:
        raise EndpointError(f"endpoint answered HTTP {status} {reply.reason}"
                            f"{_server_message(reply)}")
    if len(reply.body) > MAX_RESPONSE:
        raise EndpointError(f"response larger than {MAX_RESPONSE} bytes")
    return reply


def _post_with_retries(endpoint: Endpoint, payload: bytes, headers: dict[str, str],
                       opts: ClientOptions, deadline: Deadline) -> Reply:
    delay = opts.backoff
    for attempt in range(opts.retries + 1):
        try:
            return _post(endpoint, payload, headers, opts.timeout, deadline)
        except _Transient as exc:
            if attempt == opts.retries:
                raise EndpointError(f"{exc} ({opts.retries + 1} attempts)") from None
        deadline.sleep(delay)
        delay *= 2
    raise EndpointError("endpoint unreachable")  # not reached: the loop returns or raises


def run_batches(endpoint: Endpoint, x: np.ndarray, opts: ClientOptions,
                encode: Callable[[np.ndarray], tuple[bytes, dict[str, str]]],
                decode: Callable[[Reply, int], np.ndarray], who: str) -> np.ndarray:
    """Every batch of ``x`` sent and answered under one deadline, for any protocol.

    ``encode(batch) -> (body, headers)``; ``decode(reply, n) -> answers`` raises
    ``EndpointError``. The deadline covers every request, retry and backoff.
    """
    deadline = Deadline(opts.deadline)
    answers = []
    for start in range(0, len(x), opts.batch_size):  # bounded: len(x) <= max_queries
        batch = x[start : start + opts.batch_size]
        payload, headers = encode(batch)
        try:
            reply = _post_with_retries(endpoint, payload, headers, opts, deadline)
        except DeadlinePassed:
            raise EndpointError(f"the endpoint did not finish answering within the deadline "
                                f"of {opts.deadline:g} s ({start} of {len(x)} inputs "
                                "answered)") from None
        answers.append(decode(reply, len(batch)))
    return join_answers(answers, who)


def _answers_of(body: bytes, expected: int, classes: int) -> np.ndarray:
    """Labels (N,), or scores (N, classes) when the answer carries every class's ``top_k``."""
    try:
        obj = json.loads(body)
    except RecursionError:
        raise EndpointError("endpoint answered JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):  # malformed, or an int over the digit limit
        raise EndpointError("endpoint answered malformed JSON") from None
    if not isinstance(obj, dict) or "labels" not in obj:
        raise EndpointError("endpoint answer has no 'labels' field")
    labels = obj["labels"]
    if not isinstance(labels, list):
        raise EndpointError("endpoint 'labels' is not a list")
    if len(labels) != expected:
        raise EndpointError(f"endpoint returned {len(labels)} labels for {expected} inputs")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise EndpointError("endpoint 'labels' are not all integers")
    if not all(0 <= v < classes for v in labels):  # before NumPy: 10**30 fits no int64
        raise EndpointError(f"endpoint returned a label outside 0..{classes - 1}")
    out = np.asarray(labels, dtype=np.int64)
    if "top_k" not in obj:  # a server that gives labels only: the match test alone
        return out
    scores = _top_k_scores(obj["top_k"], expected, classes)
    if (scores[np.arange(expected), out] < scores.max(1)).any():
        raise EndpointError("endpoint 'labels' disagree with its own 'top_k' scores")
    return scores


def _top_k_scores(rows: object, expected: int, classes: int) -> np.ndarray:
    """Every class's probability from ``top_k``: one [label, prob] pair per class per row."""
    bad = EndpointError(f"endpoint 'top_k' is not {expected} lists of {classes} "
                        "[label, probability] pairs")
    if not isinstance(rows, list) or len(rows) != expected:
        raise bad
    pairs = [p for row in rows if isinstance(row, list) and len(row) == classes for p in row]
    if len(pairs) != expected * classes or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], int)
            and not isinstance(p[0], bool) and 0 <= p[0] < classes
            and isinstance(p[1], int | float) and not isinstance(p[1], bool) for p in pairs):
        raise bad
    idx = np.asarray([p[0] for p in pairs], dtype=np.int64).reshape(expected, classes)
    val = np.asarray([float(p[1]) for p in pairs], dtype=np.float64).reshape(expected, classes)
    if not np.isfinite(val).all():
        raise EndpointError("endpoint 'top_k' holds NaN or infinity")
    if (np.sort(idx, axis=1) != np.arange(classes)).any():
        raise EndpointError("endpoint 'top_k' does not name every class once per input")
    scores = np.empty_like(val)
    np.put_along_axis(scores, idx, val, axis=1)
    return scores


def query_answers(suspect: str, x: np.ndarray, classes: int, opts: ClientOptions
                  ) -> np.ndarray:
    """The endpoint's answers for ``x`` (N, C, H, W), in batches.

    Scores (N, classes) where the endpoint gives them (ticketmark's ``/predict`` asked
    for every class's ``top_k``; a KServe v2 score output), else top-1 labels (N,). Every
    batch must answer in the same form.
    """
    if opts.batch_size < 1:
        raise EndpointError(f"batch size must be >= 1, got {opts.batch_size}")
    if opts.timeout <= 0:
        raise EndpointError(f"timeout must be positive, got {opts.timeout}")
    if opts.deadline <= 0:
        raise EndpointError(f"deadline must be positive, got {opts.deadline}")
    if len(x) > opts.max_queries:
        raise EndpointError(f"the set needs {len(x)} queries, over the cap of "
                            f"{opts.max_queries}")
    endpoint = parse_endpoint(suspect)
    # Other protocols (KServe v2) and input adapters live in their own modules.
    from ticketmark.ownership.trigger.adapter import InputAdapter

    adapter = opts.adapter or InputAdapter()
    if adapter.resolve_protocol(urllib.parse.urlsplit(endpoint.url).path) == "kserve-v2":
        from ticketmark.ownership.trigger.kserve import query_answers_v2

        return query_answers_v2(endpoint, x, classes, opts, adapter)
    if opts.adapter is not None:
        x = adapter.apply(x)

    def encode(batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
        return json.dumps({"npy": encode_npy(batch), "top_k": classes}).encode(), {}

    return run_batches(endpoint, x, opts, encode,
                       lambda reply, n: _answers_of(reply.body, n, classes), "endpoint")


def join_answers(answers: list[np.ndarray], who: str) -> np.ndarray:
    """The batches' answers as one array; a server that switches form midway is refused."""
    if len({a.ndim for a in answers}) > 1:
        raise EndpointError(f"{who} answered scores for some batches and labels for others")
    return np.concatenate(answers) if answers else np.zeros(0, dtype=np.int64)
