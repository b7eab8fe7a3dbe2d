"""Wire format of ``POST /predict``.

Request JSON: ``{"inputs": [[[[...]]]]}`` (nested lists, shape (N, C, H, W)) or
``{"npy": "<base64 of a .npy file>"}``, optionally ``"top_k": k``. Response JSON:
``{"labels": [int, ...], "top_k": [[[label, prob], ...], ...]}`` (top_k only if asked).
Errors: ``{"error": "one line"}`` with a 4xx status.

``.npy`` is read with ``allow_pickle=False``: a request body never runs code.
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


def decode_inputs(body: bytes, input_shape: tuple[int, int, int], max_batch: int
                  ) -> tuple[np.ndarray, int]:
    """Parse and validate a request body into float32 (N, C, H, W) and a top-k (0: none)."""
    try:
        obj: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(400, "body is not valid JSON") from None
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
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except (binascii.Error, ValueError, OSError, EOFError):
            raise BadRequest(400, "'npy' is not a base64-encoded .npy array") from None
        if arr.dtype.kind not in "fiu":
            raise BadRequest(400, f"'npy' array has dtype {arr.dtype}, expected numbers")
    else:
        try:
            arr = np.asarray(obj["inputs"], dtype=np.float64)
        except (ValueError, TypeError):
            raise BadRequest(400, "'inputs' must be a rectangular nested list of numbers"
                             ) from None
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
        raise BadRequest(400, "inputs contain NaN or infinity")
    return x, top_k
