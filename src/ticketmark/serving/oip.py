"""Wire format of the Open Inference Protocol (KServe v2 REST), JSON and binary tensors.

The protocol Triton, KServe, Seldon MLServer and TorchServe speak, so a thief's deployment
most likely answers ``POST /v2/models/{name}/infer``::

    request:  {"id": "...", "inputs": [{"name": "input", "shape": [N, C, H, W],
               "datatype": "FP32", "data": [... N*C*H*W numbers, flat or nested ...]}],
               "outputs": [{"name": "logits"}]}              # "outputs" optional
    response: {"model_name": "...", "id": "...", "outputs": [
               {"name": "logits", "shape": [N, K], "datatype": "FP32", "data": [...]},
               {"name": "label", "shape": [N], "datatype": "INT64", "data": [...]}]}

The binary-data extension (Triton's, and ``tritonclient``'s default): the body is the JSON
header followed by raw little-endian tensor bytes; the HTTP header
``Inference-Header-Content-Length`` says where the JSON ends. An input with
``"parameters": {"binary_data_size": n}`` takes its ``n`` bytes from there (in input order)
instead of ``"data"``; ``"parameters": {"binary_data_output": true}`` on the request, or
``{"binary_data": true}`` on one requested output, asks for outputs the same way, each
answered with its own ``binary_data_size``.

Both sides live here (the server's decoder and the client's encoder/reader), so they agree
by construction and a test of one exercises the other. Everything a peer sends is checked by
type and range before it is used (``BadRequest`` on the server, ``ValueError`` for the
client to turn into "could not verify"); a binary size is checked against shape x item size
and the bytes actually present before any array is made.
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
BINARY_HEADER = "Inference-Header-Content-Length"


def split_body(body: bytes, header_length: str | None, err: Callable[[str], Exception]
               ) -> tuple[bytes, memoryview | None]:
    """The JSON part and the binary part (None without the extension header)."""
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not text.isdigit() or len(text) > 12 or int(text) > len(body):
        raise err(f"{BINARY_HEADER} {header_length[:20]!r} is not a length within the "
                  f"{len(body)}-byte body")
    n = int(text)
    return body[:n], memoryview(body)[n:]


def _parameters(obj: dict[str, Any], where: str, err: Callable[[str], Exception]
                ) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise err(f"{where} 'parameters' must be an object")
    return params


def _binary_size(params: dict[str, Any], where: str, err: Callable[[str], Exception]
                 ) -> int | None:
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**40:
        raise err(f"{where} 'binary_data_size' must be a non-negative integer")
    return size


def _flag(params: dict[str, Any], key: str, where: str, err: Callable[[str], Exception]
          ) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise err(f"{where} parameter {key!r} must be true or false")
    return value


def _from_binary(chunk: memoryview, datatype: str, count: int, where: str,
                 err: Callable[[str], Exception]) -> np.ndarray:
    """``count`` values of ``datatype`` from exactly ``count`` x item size bytes."""
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise err(f"{where} has {len(chunk)} bytes of binary data; its shape and "
                  f"{datatype} need {count * dtype.itemsize}")
    return np.frombuffer(chunk, dtype=dtype, count=count)


def _shape(value: Any, where: str, err: Callable[[str], Exception]) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in value):
        raise err(f"{where} 'shape' must be a list of at most {MAX_RANK} non-negative ints")
    return value


def decode_request(body: bytes, input_shape: tuple[int, int, int], max_batch: int,
                   header_length: str | None = None
                   ) -> tuple[np.ndarray, list[tuple[str, bool]], str | None]:
    """Inputs (N, C, H, W) float32, the outputs asked for (name, as binary), and the id.

    ``header_length``: the request's ``Inference-Header-Content-Length``, if any.
    """
    def bad(message: str) -> BadRequest:
        return BadRequest(400, message)

    numel = int(np.prod(input_shape))
    head, binary = split_body(body, header_length, bad)
    obj = parse_json(head, max_batch * numel)
    if not isinstance(obj, dict):
        raise BadRequest(400, "body must be a JSON object")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest(400, "'id' must be a string")
    params = _parameters(obj, "request", bad)
    asked = obj.get("outputs")
    if params.get("classification") or isinstance(asked, list) and any(
            isinstance(o, dict) and isinstance(o.get("parameters"), dict)
            and o["parameters"].get("classification") for o in asked):
        raise BadRequest(400, "classification outputs are not supported; ask for 'logits' "
                              "or 'label'")
    binary_default = bool(_flag(params, "binary_data_output", "request", bad))
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, "'inputs' must be a list holding one tensor object")
    tensor = inputs[0]
    shape = _shape(tensor.get("shape"), "input", bad)
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES or datatype == "BOOL":
        raise BadRequest(400, f"input datatype must be one of "
                              f"{', '.join(k for k in DATATYPES if k != 'BOOL')}")
    count = 1
    for d in shape:
        count *= d
    if count > max_batch * numel or any(d > max_batch * numel for d in shape):
        raise BadRequest(413, f"input of shape {shape} exceeds the limit of "
                              f"{max_batch} inputs")
    size = _binary_size(_parameters(tensor, "input", bad), "input", bad)
    if size is not None:
        if binary is None:
            raise BadRequest(400, f"input has 'binary_data_size' but the request has no "
                                  f"{BINARY_HEADER} header")
        if size != len(binary):
            raise BadRequest(400, f"input 'binary_data_size' is {size} but {len(binary)} "
                                  "binary bytes follow the JSON")
        if "data" in tensor:
            raise BadRequest(400, "input has both 'data' and 'binary_data_size'")
        arr = _from_binary(binary, datatype, count, "input", bad).astype(np.float32)
    else:
        if binary is not None and len(binary):
            raise BadRequest(400, f"{len(binary)} binary bytes follow the JSON but no input "
                                  "has 'binary_data_size'")
        arr = numbers_array(tensor.get("data"), "input 'data'")
    if arr.size != count:
        raise BadRequest(400, f"input 'data' holds {arr.size} numbers; shape {shape} needs "
                              f"{count}")
    x = arr.reshape(shape)
    if x.ndim == 2 and x.shape[1] == numel:  # flattened images
        x = x.reshape(-1, *input_shape)
    wanted = obj.get("outputs")
    if wanted is None:
        names = [(name, binary_default) for name in OUTPUTS]
    else:
        if not isinstance(wanted, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
            raise BadRequest(400, "'outputs' must be a list of {\"name\": ...} objects")
        names = []
        for o in wanted:
            flag = _flag(_parameters(o, "output", bad), "binary_data", "output", bad)
            names.append((o["name"], binary_default if flag is None else flag))
        unknown = [n for n, _ in names if n not in OUTPUTS]
        if unknown or not names:
            raise BadRequest(400, f"unknown output {unknown[0] if unknown else ''!r}; this "
                                  f"model has {', '.join(OUTPUTS)}")
    return check_batch(x, input_shape, max_batch), names, rid


def encode_response(model_name: str, logits: np.ndarray, names: list[tuple[str, bool]],
                    rid: str | None) -> tuple[dict[str, Any], bytes]:
    """The response's JSON, and the binary bytes that follow it (empty: plain JSON)."""
    outputs, chunks = [], []
    for name, binary in names:
        if name == LOGITS:
            values = logits.astype("<f4")
            tensor: dict[str, Any] = {"name": LOGITS, "shape": list(logits.shape),
                                      "datatype": "FP32"}
            json_data = [round(float(v), 6) for v in logits.reshape(-1)] if not binary else None
        else:
            values = logits.argmax(1).astype("<i8")
            tensor = {"name": LABEL, "shape": [len(values)], "datatype": "INT64"}
            json_data = [int(v) for v in values] if not binary else None
        if binary:
            raw = values.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = json_data
        outputs.append(tensor)
    out: dict[str, Any] = {"model_name": model_name, "outputs": outputs}
    if rid is not None:
        out["id"] = rid
    return out, b"".join(chunks)


def metadata(model_name: str, input_shape: tuple[int, int, int], num_classes: int
             ) -> dict[str, Any]:
    return {"name": model_name, "platform": "pytorch", "versions": ["1"],
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *input_shape]}],
            "outputs": [{"name": LOGITS, "datatype": "FP32", "shape": [-1, num_classes]},
                        {"name": LABEL, "datatype": "INT64", "shape": [-1]}]}


# ---- client side -------------------------------------------------------------------------


def encode_request(x: np.ndarray, input_name: str = "input", datatype: str = "FP32",
                   output: str | None = None, binary: bool = False
                   ) -> tuple[bytes, dict[str, str]]:
    """The body and extra headers of a request for the batch ``x`` (already laid out and
    scaled as the server expects); ``binary``: the binary-data extension both ways."""
    import json

    if datatype not in DATATYPES:
        raise ValueError(f"unknown datatype {datatype!r}")
    arr = np.asarray(x).astype(DATATYPES[datatype])
    tensor: dict[str, Any] = {"name": input_name, "shape": list(arr.shape),
                              "datatype": datatype}
    body: dict[str, Any] = {"inputs": [tensor]}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = arr.reshape(-1).tolist()
    if output is not None:
        body["outputs"] = [{"name": output, "parameters": {"binary_data": binary}}] \
            if binary else [{"name": output}]
    elif binary:
        body["parameters"] = {"binary_data_output": True}
    head = json.dumps(body).encode()
    if not binary:
        return head, {}
    return head + raw, {BINARY_HEADER: str(len(head))}


def read_response(body: bytes, header_length: str | None, expected: int, classes: int,
                  output: str | None = None) -> np.ndarray:
    """A whole response body (JSON, or JSON + binary tensors) -> ``answers_from_response``.
    Raises ``ValueError`` naming the fault."""
    import json

    head, binary = split_body(body, header_length, ValueError)
    try:
        obj = json.loads(head)
    except RecursionError:
        raise ValueError("answered JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError("answered malformed JSON") from None
    return answers_from_response(obj, expected, classes, output, binary)


def answers_from_response(obj: Any, expected: int, classes: int, output: str | None = None,
                          binary: memoryview | bytes | None = None) -> np.ndarray:
    """The answers of a v2 response: scores (N, classes) if it has them, else labels (N,).

    Scores are preferred: they show where a label ranks, not only whether it came first.
    ``output`` names the output to read; otherwise the first of shape [N, classes] with a
    float datatype, else the first of shape [N] with an integer datatype. ``binary``: the
    bytes after the JSON, where outputs with ``binary_data_size`` keep their values (in
    output order). Raises ``ValueError`` naming the fault.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("outputs"), list):
        raise ValueError("answer has no 'outputs' list")
    tensors = [t for t in obj["outputs"] if isinstance(t, dict)]
    chunks = _binary_chunks(tensors, binary)
    if output is not None:
        tensors = [t for t in tensors if t.get("name") == output]
        if not tensors:
            raise ValueError(f"answer has no output named {output!r}")
    for want_scores in (True, False):
        for t in tensors:
            shape = _shape(t.get("shape"), "output", ValueError)
            dtype = t.get("datatype")
            if dtype not in DATATYPES or dtype == "BOOL":
                continue
            is_int = dtype.startswith(("INT", "UINT"))
            chunk = chunks.get(id(t))
            if want_scores and not is_int and shape == [expected, classes]:
                if chunk is not None:
                    arr = _from_binary(chunk, dtype, expected * classes, "score output",
                                       ValueError).astype(np.float64)
                    if not np.isfinite(arr).all():
                        raise ValueError("score output holds NaN or infinity")
                else:
                    arr = _finite(t.get("data"), expected * classes)
                return arr.reshape(expected, classes)
            if not want_scores and is_int and shape == [expected]:
                if chunk is not None:
                    arr = _from_binary(chunk, dtype, expected, "label output", ValueError)
                    if len(arr) and (arr.min() < 0 or arr.max() >= classes):
                        raise ValueError(f"answer has a label outside 0..{classes - 1}")
                    return arr.astype(np.int64)
                return _int_labels(t.get("data"), expected, classes)
    raise ValueError(f"answer has no output of {expected} labels or {expected}x{classes} "
                     "scores")


def _binary_chunks(tensors: list[dict[str, Any]], binary: memoryview | bytes | None
                   ) -> dict[int, memoryview]:
    """Each binary output's bytes, by the output's id; sizes must add up to the buffer."""
    out: dict[int, memoryview] = {}
    view = memoryview(binary if binary is not None else b"")
    at = 0
    for t in tensors:
        params = t.get("parameters")
        if not isinstance(params, dict):
            continue
        size = _binary_size(params, "output", ValueError)
        if size is None:
            continue
        if binary is None:
            raise ValueError(f"output has 'binary_data_size' but the answer has no "
                             f"{BINARY_HEADER} header")
        if at + size > len(view):
            raise ValueError(f"outputs' binary_data_size add up to more than the "
                             f"{len(view)} binary bytes sent")
        out[id(t)] = view[at : at + size]
        at += size
    if at != len(view):
        raise ValueError(f"{len(view) - at} binary bytes follow the answer's JSON that no "
                         "output claims")
    return out


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
