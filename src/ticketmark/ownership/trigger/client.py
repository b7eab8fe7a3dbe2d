"""Query a suspect's prediction endpoint, trusting nothing it sends back.

The suspect is run by the party accused of theft, so every response is validated: JSON,
an object, ``labels`` a list of exactly as many integers in range as inputs sent. Network
trouble (refused connection, timeout, 5xx, 429) is retried with exponential backoff;
anything else fails at once. Every failure is an ``EndpointError`` whose message becomes
the "could not verify" reason: a broken endpoint must never look like a negative (or
positive) verdict.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticketmark.serving.protocol import encode_npy

MAX_RESPONSE = 8 * 1024 * 1024


class EndpointError(Exception):
    """The endpoint could not be queried, or answered something unusable."""


@dataclass
class ClientOptions:
    batch_size: int = 50
    timeout: float = 10.0  # seconds per request
    max_queries: int = 10_000  # most inputs sent in total
    retries: int = 2  # extra attempts after a transient failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    adapter: Any = None  # adapter.InputAdapter: protocol, input layout and normalisation


def endpoint_url(suspect: str) -> str:
    """``http://host:port`` or ``.../predict``; a bare host gets the ``/predict`` path."""
    parts = urllib.parse.urlsplit(suspect)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"not an http(s) URL: {suspect}")
    path = parts.path if parts.path not in ("", "/") else "/predict"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _post(url: str, payload: bytes, timeout: float) -> bytes:
    req = urllib.request.Request(url, data=payload, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only
        body = resp.read(MAX_RESPONSE + 1)
    if len(body) > MAX_RESPONSE:
        raise EndpointError(f"response larger than {MAX_RESPONSE} bytes")
    return body


def _post_with_retries(url: str, payload: bytes, opts: ClientOptions) -> bytes:
    delay = opts.backoff
    for attempt in range(opts.retries + 1):
        last = attempt == opts.retries
        try:
            return _post(url, payload, opts.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (429, 500, 502, 503, 504) and not last:
                time.sleep(delay)
                delay *= 2
                continue
            raise EndpointError(f"endpoint answered HTTP {exc.code} {exc.reason}") from None
        except TimeoutError:
            if last:
                raise EndpointError(f"endpoint did not answer within {opts.timeout:g} s "
                                    f"({opts.retries + 1} attempts)") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                if last:
                    raise EndpointError(f"endpoint did not answer within {opts.timeout:g} s "
                                        f"({opts.retries + 1} attempts)") from None
            elif last:
                raise EndpointError(f"cannot reach endpoint: {reason}") from None
        time.sleep(delay)
        delay *= 2
    raise EndpointError("endpoint unreachable")  # not reached: the loop returns or raises


def _labels_of(body: bytes, expected: int, classes: int) -> np.ndarray:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
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
    out = np.asarray(labels, dtype=np.int64)
    if len(out) and (int(out.min()) < 0 or int(out.max()) >= classes):
        raise EndpointError(f"endpoint returned a label outside 0..{classes - 1}")
    return out


def query_labels(suspect: str, x: np.ndarray, classes: int, opts: ClientOptions
                 ) -> np.ndarray:
    """Top-1 labels for ``x`` (N, C, H, W) from the endpoint, in batches."""
    if opts.batch_size < 1:
        raise EndpointError(f"batch size must be >= 1, got {opts.batch_size}")
    if opts.timeout <= 0:
        raise EndpointError(f"timeout must be positive, got {opts.timeout}")
    if len(x) > opts.max_queries:
        raise EndpointError(f"the set needs {len(x)} queries, over the cap of "
                            f"{opts.max_queries}")
    url = endpoint_url(suspect)
    # Other protocols (KServe v2) and input adapters live in their own modules.
    from ticketmark.ownership.trigger.adapter import InputAdapter

    adapter = opts.adapter or InputAdapter()
    if adapter.resolve_protocol(urllib.parse.urlsplit(url).path) == "kserve-v2":
        from ticketmark.ownership.trigger.kserve import query_labels_v2

        return query_labels_v2(url, x, classes, opts, adapter)
    if opts.adapter is not None:
        x = adapter.apply(x)
    labels = []
    for start in range(0, len(x), opts.batch_size):  # bounded: len(x) <= max_queries
        batch = x[start : start + opts.batch_size]
        payload = json.dumps({"npy": encode_npy(batch)}).encode()
        labels.append(_labels_of(_post_with_retries(url, payload, opts), len(batch), classes))
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
