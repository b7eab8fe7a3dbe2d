"""Readers for files someone else wrote: bounded in size, nesting and number width.

A suspect's sidecar, a claim, a seed file or a report folder may come from the party who
wants a check to fail. ``json.loads`` alone turns a deeply nested document into a
RecursionError, a 5,000-digit number into a ValueError, and a wrong type into an
AttributeError far from the file that caused it. These helpers turn every such case into
one ``TicketmarkError`` naming the file and the field, before anything is allocated for it.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ticketmark.errors import TicketmarkError

MAX_JSON_BYTES = 16 * 1024 * 1024  # sidecars and claims are kilobytes; this is generous


def read_bytes_limited(path: Path, limit: int, what: str) -> bytes:
    """The file's bytes, refusing anything larger than ``limit`` before reading it."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise TicketmarkError(f"{path} is {size} bytes, larger than any {what} "
                                  f"({limit} at most)")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except IsADirectoryError:
        raise TicketmarkError(f"{path} is a folder, not a {what}") from None
    except OSError as exc:
        raise TicketmarkError(f"cannot read {path} ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew while we looked
        raise TicketmarkError(f"{path} is larger than any {what} ({limit} bytes at most)")
    return data


def parse_json(data: bytes | str, source: str, what: str) -> Any:
    """JSON from untrusted bytes: malformed, too deep or too wide numbers are one error."""
    try:
        return json.loads(data)
    except RecursionError:
        raise TicketmarkError(f"{source} is not a {what} (JSON nested too deeply)") from None
    except UnicodeDecodeError:
        raise TicketmarkError(f"{source} is not a {what} (not UTF-8 text)") from None
    except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
        raise TicketmarkError(f"{source} is not a {what} ({exc})") from None


class NpyError(ValueError):
    """A .npy payload that is malformed or larger than allowed (``too_large`` then)."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


def read_npy(raw: bytes, max_elements: int, kinds: str = "fiu") -> np.ndarray:
    """A ``.npy`` payload whose header is checked before anything is allocated.

    ``np.load`` trusts the header: a 100-byte payload claiming a 3.6 TiB shape is a
    MemoryError (or, under overcommit, that much address space). Here the dtype must be a
    plain number of ``kinds`` (never an object: nothing is unpickled), the element count at
    most ``max_elements`` (counted in Python ints, so it cannot overflow), and the bytes
    that follow exactly shape x item size; the array is then a view of ``raw``.
    Raises ``NpyError`` naming the fault.
    """
    buf = io.BytesIO(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "created on Python 2": one error line, not two
            version = np.lib.format.read_magic(buf)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
            else:
                raise ValueError(f"version {version}")
    except Exception:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError,
        # tokenize.TokenError, MemoryError, RecursionError... for a hostile header
        raise NpyError("not a .npy array (bad magic or header)") from None
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None \
            or dtype.subdtype is not None:
        raise NpyError(f"array has dtype {dtype}, expected plain numbers")
    if len(shape) > 8 or any(not isinstance(d, int) or d < 0 for d in shape):
        raise NpyError(f"array has shape {show(shape)}")
    count = 1
    for d in shape:  # stop as soon as the limit is passed (a zero elsewhere included)
        count *= d
        if count > max_elements or d > max_elements:
            raise NpyError(f"array of shape {show(shape)} exceeds the limit of "
                           f"{max_elements} numbers", too_large=True)
    data = memoryview(raw)[buf.tell():]
    if len(data) != count * dtype.itemsize:
        raise NpyError(f"header says shape {show(shape)} of {dtype} "
                       f"({count * dtype.itemsize} bytes) but {len(data)} bytes follow")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_json(path: str | Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    path = Path(path)
    return parse_json(read_bytes_limited(path, limit, what), str(path), what)


def check_int(value: Any, name: str, lo: int, hi: int, source: str) -> int:
    """``value`` as an int in [lo, hi]; bools, floats and strings are refused."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TicketmarkError(f"{source}: {name} must be an integer, got {show(value)}")
    if not lo <= value <= hi:
        raise TicketmarkError(f"{source}: {name} must be in {lo}..{hi}, got {show(value)}")
    return value


def check_float(value: Any, name: str, lo: float, hi: float, source: str) -> float:
    """``value`` as a finite float in [lo, hi] (ints accepted, bools not)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TicketmarkError(f"{source}: {name} must be a number, got {show(value)}")
    out = float(value) if not isinstance(value, int) or abs(value) < 2**1023 else math.inf
    if not (math.isfinite(out) and lo <= out <= hi):
        raise TicketmarkError(f"{source}: {name} must be in [{lo:g}, {hi:g}], got "
                              f"{show(value)}")
    return out


def check_str(value: Any, name: str, source: str, max_len: int = 100_000) -> str:
    if not isinstance(value, str):
        raise TicketmarkError(f"{source}: {name} must be a string, got {show(value)}")
    if len(value) > max_len:
        raise TicketmarkError(f"{source}: {name} is longer than {max_len} characters")
    return value


def check_list_of_dicts(value: Any, name: str, source: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TicketmarkError(f"{source}: {name} must be a list of objects, got "
                              f"{show(value)}")
    return value


def show(value: Any) -> str:
    """A short, safe rendering of a hostile value for an error line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"an integer of about {value.bit_length() * 0.30103:.0f} digits"
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
