"""Wire format of ``POST /predict``.

Request JSON: ``{"inputs": [[[[...]]]]}`` (nested lists, shape (N, C, H, W)) or
``{"npy": "<base64 of a .npy file>"}``, optionally ``"top_k": k``. Response JSON:
``{"labels": [int, ...], "top_k": [[[label, prob], ...], ...]}`` (top_k only if asked).
Errors: ``{"error": "one line"}`` with a 4xx status.

``.npy`` is never unpickled, and its header is checked against the bytes that follow before
anything is allocated (a 100-byte body claiming a 10**12-element shape is a 400, not a
MemoryError). JSON is parsed only after a cheap count of its separators shows it cannot hold
more numbers than the batch limit allows, so a body's parsed size is bounded too; nesting
too deep and integers too long for Python are 400s as well.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np


class BadRequest(Exception):
    """A request the server rejects with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def encode_npy(x: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


NUMERIC_KINDS = "fiu"


def parse_json(body: bytes, max_numbers: int) -> Any:
    """``json.loads`` bounded by the number of values it may create.

    Every JSON value sits after ``[``, ``,`` or ``:``, so their count bounds the objects
    parsing can allocate (about 32 bytes each); a body over twice the numbers a full batch
    needs (room for the brackets of nested lists) is refused before parsing.
    """
    if body.count(b",") + body.count(b"[") + body.count(b":") > 2 * max_numbers + 1024:
        raise BadRequest(413, f"body holds more values than the batch limit allows "
                              f"({max_numbers} numbers)")
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest(400, "body nests too deeply") from None
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError, and ints over 4300 digits
        raise BadRequest(400, "body is not valid JSON") from None


def numbers_array(value: Any, what: str) -> np.ndarray:
    """A nested list of numbers as float64, with every way it can fail as a 400."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(400, f"{what} must be a rectangular nested list of numbers"
                         ) from None
    return arr


def load_npy(raw: bytes, max_elements: int) -> np.ndarray:
    """A ``.npy`` payload, its header checked before any allocation; never unpickled."""
    from ticketmark.io.untrusted import NpyError, read_npy

    try:
        return read_npy(raw, max_elements, NUMERIC_KINDS)
    except NpyError as exc:
        raise BadRequest(413 if exc.too_large else 400, f"'npy' {exc}") from None


def decode_inputs(body: bytes, input_shape: tuple[int, int, int], max_batch: int
                  ) -> tuple[np.ndarray, int]:
    """Parse and validate a request body into float32 (N, C, H, W) and a top-k (0: none)."""
    max_numbers = max_batch * int(np.prod(input_shape))
    obj: Any = parse_json(body, max_numbers)
    if not isinstance(obj, dict):
        raise BadRequest(400, "body must be a JSON object")
    top_k = obj.get("top_k", 0)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise BadRequest(400, "top_k must be a non-negative integer")
    if ("inputs" in obj) == ("npy" in obj):
        raise BadRequest(400, "give exactly one of 'inputs' (nested lists) or 'npy' (base64)")
    if "npy" in obj:
        if not isinstance(obj["npy"], str):
            raise BadRequest(400, "'npy' must be a base64 string")
        try:
            raw = base64.b64decode(obj["npy"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, "'npy' is not a base64-encoded .npy array") from None
        arr = load_npy(raw, max_numbers)
    else:
        arr = numbers_array(obj["inputs"], "'inputs'")
    return check_batch(arr, input_shape, max_batch), top_k


def check_batch(arr: np.ndarray, input_shape: tuple[int, int, int], max_batch: int
                ) -> np.ndarray:
    """float32 (N, C, H, W) within the limits, finite; a single (C, H, W) input is N=1."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(arr, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise BadRequest(400, f"inputs have shape {tuple(arr.shape)}, expected "
                              f"(N, {', '.join(map(str, input_shape))})")
    if x.shape[0] == 0:
        raise BadRequest(400, "inputs are empty")
    if x.shape[0] > max_batch:
        raise BadRequest(413, f"batch of {x.shape[0]} inputs exceeds the limit {max_batch}")
    if not np.isfinite(x).all():
        raise BadRequest(400, "inputs contain NaN or infinity (or numbers beyond float32)")
    return np.require(x, requirements=["C", "W"])  # writable: torch.from_numpy wants it
