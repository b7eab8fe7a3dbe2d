"""Wire format of the Open Inference Protocol (KServe v2 REST), JSON tensors only.

The protocol Triton, KServe, Seldon MLServer and TorchServe speak, so a thief's deployment
most likely answers ``POST /v2/models/{name}/infer``::

    request:  {"id": "...", "inputs": [{"name": "input", "shape": [N, C, H, W],
               "datatype": "FP32", "data": [... N*C*H*W numbers, flat or nested ...]}],
               "outputs": [{"name": "logits"}]}              # "outputs" optional
    response: {"model_name": "...", "id": "...", "outputs": [
               {"name": "logits", "shape": [N, K], "datatype": "FP32", "data": [...]},
               {"name": "label", "shape": [N], "datatype": "INT64", "data": [...]}]}

Both sides live here (the server's decoder and the client's encoder/reader), so they agree
by construction and a test of one exercises the other. Everything a peer sends is checked by
type and range before it is used (``BadRequest`` on the server, ``ValueError`` for the
client to turn into "could not verify").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ticketmark.serving.protocol import BadRequest, check_batch, numbers_array, parse_json

DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
LOGITS, LABEL = "logits", "label"
OUTPUTS = (LOGITS, LABEL)
MAX_RANK = 8


def _shape(value: Any, where: str, err: Callable[[str], Exception]) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in value):
        raise err(f"{where} 'shape' must be a list of at most {MAX_RANK} non-negative ints")
    return value


def decode_request(body: bytes, input_shape: tuple[int, int, int], max_batch: int
                   ) -> tuple[np.ndarray, list[str], str | None]:
    """Inputs (N, C, H, W) float32, the outputs asked for, and the request id."""
    numel = int(np.prod(input_shape))
    obj = parse_json(body, max_batch * numel)
    if not isinstance(obj, dict):
        raise BadRequest(400, "body must be a JSON object")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest(400, "'id' must be a string")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, "'inputs' must be a list holding one tensor object")
    tensor = inputs[0]
    shape = _shape(tensor.get("shape"), "input", lambda m: BadRequest(400, m))
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES or datatype == "BOOL":
        raise BadRequest(400, f"input datatype must be one of "
                              f"{', '.join(k for k in DATATYPES if k != 'BOOL')}")
    count = 1
    for d in shape:
        count *= d
    if count > max_batch * numel:
        raise BadRequest(413, f"input of shape {shape} exceeds the limit of "
                              f"{max_batch} inputs")
    arr = numbers_array(tensor.get("data"), "input 'data'")
    if arr.size != count:
        raise BadRequest(400, f"input 'data' holds {arr.size} numbers; shape {shape} needs "
                              f"{count}")
    x = arr.reshape(shape)
    if x.ndim == 2 and x.shape[1] == numel:  # flattened images
        x = x.reshape(-1, *input_shape)
    wanted = obj.get("outputs")
    if wanted is None:
        names = list(OUTPUTS)
    else:
        if not isinstance(wanted, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
            raise BadRequest(400, "'outputs' must be a list of {\"name\": ...} objects")
        names = [o["name"] for o in wanted]
        unknown = [n for n in names if n not in OUTPUTS]
        if unknown or not names:
            raise BadRequest(400, f"unknown output {unknown[0] if unknown else ''!r}; this "
                                  f"model has {', '.join(OUTPUTS)}")
    return check_batch(x, input_shape, max_batch), names, rid


def encode_response(model_name: str, logits: np.ndarray, names: list[str],
                    rid: str | None) -> dict[str, Any]:
    outputs = []
    for name in names:
        if name == LOGITS:
            outputs.append({"name": LOGITS, "shape": list(logits.shape), "datatype": "FP32",
                            "data": [round(float(v), 6) for v in logits.reshape(-1)]})
        else:
            labels = logits.argmax(1)
            outputs.append({"name": LABEL, "shape": [len(labels)], "datatype": "INT64",
                            "data": [int(v) for v in labels]})
    out: dict[str, Any] = {"model_name": model_name, "outputs": outputs}
    if rid is not None:
        out["id"] = rid
    return out


def metadata(model_name: str, input_shape: tuple[int, int, int], num_classes: int
             ) -> dict[str, Any]:
    return {"name": model_name, "platform": "pytorch", "versions": ["1"],
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *input_shape]}],
            "outputs": [{"name": LOGITS, "datatype": "FP32", "shape": [-1, num_classes]},
                        {"name": LABEL, "datatype": "INT64", "shape": [-1]}]}


# ---- client side -------------------------------------------------------------------------


def encode_request(x: np.ndarray, input_name: str = "input", datatype: str = "FP32",
                   output: str | None = None) -> dict[str, Any]:
    """A request for the batch ``x`` (already laid out and scaled as the server expects)."""
    if datatype not in DATATYPES:
        raise ValueError(f"unknown datatype {datatype!r}")
    arr = np.asarray(x).astype(DATATYPES[datatype])
    body: dict[str, Any] = {"inputs": [{"name": input_name, "shape": list(arr.shape),
                                        "datatype": datatype,
                                        "data": arr.reshape(-1).tolist()}]}
    if output is not None:
        body["outputs"] = [{"name": output}]
    return body


def answers_from_response(obj: Any, expected: int, classes: int,
                          output: str | None = None) -> np.ndarray:
    """The answers of a v2 response: scores (N, classes) if it has them, else labels (N,).

    Scores are preferred: they show where a label ranks, not only whether it came first.
    ``output`` names the output to read; otherwise the first of shape [N, classes] with a
    float datatype, else the first of shape [N] with an integer datatype. Raises
    ``ValueError`` naming the fault.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("outputs"), list):
        raise ValueError("answer has no 'outputs' list")
    tensors = [t for t in obj["outputs"] if isinstance(t, dict)]
    if output is not None:
        tensors = [t for t in tensors if t.get("name") == output]
        if not tensors:
            raise ValueError(f"answer has no output named {output!r}")
    for want_scores in (True, False):
        for t in tensors:
            shape = _shape(t.get("shape"), "output", ValueError)
            dtype = t.get("datatype")
            if dtype not in DATATYPES:
                continue
            is_int = dtype.startswith(("INT", "UINT"))
            if want_scores and not is_int and shape == [expected, classes]:
                return _finite(t.get("data"), expected * classes).reshape(expected, classes)
            if not want_scores and is_int and shape == [expected]:
                return _int_labels(t.get("data"), expected, classes)
    raise ValueError(f"answer has no output of {expected} labels or {expected}x{classes} "
                     "scores")


def _int_labels(data: Any, expected: int, classes: int) -> np.ndarray:
    if not isinstance(data, list) or len(data) != expected or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in data):
        raise ValueError(f"label output is not a list of {expected} integers")
    if any(v < 0 or v >= classes for v in data):  # before any conversion: 10**30 is fine here
        raise ValueError(f"answer has a label outside 0..{classes - 1}")
    return np.asarray(data, dtype=np.int64)


def _finite(data: Any, count: int) -> np.ndarray:
    if not isinstance(data, list) or len(data) != count or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in data):
        raise ValueError(f"score output is not a flat list of {count} numbers")
    try:
        arr = np.asarray(data, dtype=np.float64)
    except OverflowError:
        raise ValueError("score output holds a number beyond float range") from None
    if not np.isfinite(arr).all():
        raise ValueError("score output holds NaN or infinity")
    return arr
