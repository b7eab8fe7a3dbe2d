"""Read a suspect model's weights from whatever a thief actually publishes.

A stolen model never turns up as a ticketmark ticket with its sidecar. It turns up as a
``model.safetensors`` with its own key names, a ``torch.save``d state dict (often nested in a
training checkpoint), an ONNX file, a folder of shards, or an ``nn.Module`` in someone's
Python session. White-box verification needs only the weights, so this module turns each of
those into one flat ``name -> tensor`` dict and nothing else: no sidecar, mask or
architecture, and nothing the file's holder writes about itself is believed.

What is normalised, because a thief's tooling does it without trying to hide anything:

* a prefix shared by every key (``model.``, ``module.`` from DataParallel, ``_orig_mod.``
  from ``torch.compile``, ``backbone.``) is dropped, so the owner's layer names line up
  when nothing else was renamed; ``resolve_layer`` also matches a claimed name by suffix;
* a ticket file contributes its ``state.`` tensors only (its mask and rewind weights are
  the holder's to forge);
* ``torch.nn.utils.prune`` re-parametrisations (``weight_orig`` + ``weight_mask``) are folded
  into the effective ``weight``;
* floating tensors become float32 (half/bfloat16 exports), integer tensors are kept as-is.

What is not undone here: renamed or reordered layers, BatchNorm folded into convolutions by
an exporter, permuted channels. The verifier finds the claimed layer by shape and content;
BatchNorm tensors are kept so it can unfold scales if it wants to.

Security: nothing is unpickled (safetensors, ``torch.load(weights_only=True)``, protobuf for
ONNX). Nothing outside the suspect is read: ONNX external-data files and a folder's files
must resolve (links followed) to files inside the model's own folder. Memory is bounded by
the bytes read: each tensor's size (shape x item size) is checked against the bytes present
before it is materialised, and every file's tensors together may take at most
``MEMORY_FACTOR`` times the bytes read (plus ``MEMORY_SLACK``) once converted, so views with
zero strides, many tensors sharing one storage, a ``.pt`` zip that inflates, or ONNX
initializers all pointing at one external file are refused before they cost memory.
Every dtype a format can hold ends as a dtype the verifier can compute with: floating kinds
(half, bfloat16, float8, float4/6) as float32, bool as uint8, uint16/32/64 as int32/int64,
packed int2/int4 as int8; tensors that are not numbers (ONNX strings, complex values) or hold
no values at all (a zero in the shape) are skipped.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketmark.errors import TicketmarkError

SAFETENSORS = (".safetensors",)
PICKLE_FREE_TORCH = (".pt", ".pth", ".bin", ".ckpt")
ONNX = (".onnx",)
# Keys of a training checkpoint that hold the model's weights, most specific first.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net",
                   "network", "weights", "params", "module")
# Parts of a training checkpoint that are not the model.
NOT_WEIGHTS = ("optimizer", "optim", "scheduler", "lr_scheduler", "scaler", "amp")
MAX_TENSORS = 100_000  # a plausible model has thousands; a crafted file may claim millions
# Tensors of one suspect may take at most MEMORY_FACTOR x the bytes read, plus MEMORY_SLACK,
# once converted (float8 -> float32 is 4x; tied weights stored once and read twice are 2x).
MEMORY_FACTOR = 4
MEMORY_SLACK = 1 << 20
# Kinds torch has no abs/norm kernels for, and what they are read as.
_WIDEN = {torch.bool: torch.uint8, torch.uint16: torch.int32, torch.uint32: torch.int64,
          torch.uint64: torch.int64}


def load_suspect_weights(suspect: str | os.PathLike[str] | nn.Module | Mapping[str, Any]
                         ) -> dict[str, torch.Tensor]:
    """Every tensor of a suspect model, flat, with a shared key prefix removed.

    ``suspect``: an ``nn.Module``, a state dict, or a path to a ticket, a ``.safetensors``
    file, a ``torch.save``d state dict or checkpoint (``.pt``/``.pth``/``.bin``/``.ckpt``),
    an ``.onnx`` file, or a folder holding one of these (or the shards of one model).
    Raises ``TicketmarkError`` with one line for anything unreadable.
    """
    if isinstance(suspect, nn.Module):
        raw = dict(suspect.state_dict())
    elif isinstance(suspect, Mapping):
        raw = _tensors_of(suspect, "the state dict")
    else:
        raw, read = _load_path(Path(suspect))
        check_memory(raw, read, str(suspect))
    return normalise(raw)


def normalise(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold pruning re-parametrisations, drop the shared prefix, make floats float32."""
    if not raw:
        raise TicketmarkError("the suspect holds no tensors")
    folded = fold_pruning(raw)
    prefix = shared_prefix(folded)
    out: dict[str, torch.Tensor] = {}
    for name, value in folded.items():
        t = value.detach().cpu()
        if t.is_complex() or t.numel() == 0:
            # Not a weight the verifier reads; an empty (55649, 6922, 0, 0) "conv" would
            # still make per-kernel statistics of 55649 x 6922 (3 GB), found by fuzzing.
            continue
        if t.is_floating_point():
            t = t.float()
        elif t.dtype in _WIDEN:
            t = t.to(_WIDEN[t.dtype])
        out[name[len(prefix):]] = t.contiguous()
    if not out:
        raise TicketmarkError("the suspect holds no real-valued tensors")
    return out


def converted_bytes(t: torch.Tensor) -> int:
    """Bytes ``t`` takes once ``normalise`` has converted it (numel from its shape alone)."""
    if t.is_complex():
        return 0
    kind = _WIDEN.get(t.dtype, t.dtype)
    size = 4 if t.is_floating_point() else kind.itemsize
    return math.prod(t.shape) * size


def check_memory(raw: Mapping[str, torch.Tensor], read: int, where: str) -> None:
    """Refuse tensors that would take more than MEMORY_FACTOR x the ``read`` bytes.

    Called before anything is materialised: ``raw`` may hold views (stride 0, shared
    storage, memory-mapped files) whose shapes promise far more than the file holds.
    """
    sizes = {name: converted_bytes(t) for name, t in raw.items()}
    total = sum(sizes.values())
    if total > MEMORY_FACTOR * read + MEMORY_SLACK:
        big = max(sizes, key=sizes.__getitem__)
        raise TicketmarkError(
            f"{where}: its tensors would take {total:,} bytes from {read:,} bytes of file "
            f"(tensor {big[:80]!r} alone {sizes[big]:,}); views or shared storage that "
            f"expand the data are refused (limit {MEMORY_FACTOR}x the file)")


def fold_pruning(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``x_orig`` * ``x_mask`` -> ``x``, as ``torch.nn.utils.prune`` computes in forward."""
    out = dict(raw)
    for name in [k for k in raw if k.endswith("_orig")]:
        base = name[: -len("_orig")]
        mask = raw.get(base + "_mask")
        if mask is None or mask.shape != raw[name].shape:
            continue
        out[base] = raw[name].detach() * mask.detach().to(raw[name].dtype)
        del out[name], out[base + "_mask"]
    return out


def shared_prefix(names: Iterable[str]) -> str:
    """The longest run of whole dotted components every key starts with (``model.``).

    The last component of a key is never part of the prefix, so every key keeps a name.
    """
    keys = list(names)
    if not keys:
        return ""
    parts = [k.split(".") for k in keys]
    common: list[str] = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    # Never eat a whole key: keep at least its last component.
    common = common[: min(len(p) for p in parts) - 1]
    return "".join(c + "." for c in common)


def resolve_layer(weights: Mapping[str, torch.Tensor], name: str) -> str | None:
    """The suspect's key for an owner's layer name: exact, else the one key ending in it.

    ``backbone.layer2.0.conv1.weight`` answers for ``layer2.0.conv1.weight`` when the
    suspect's keys do not all share the ``backbone.`` prefix (a model with a separate head).
    Two or more candidates is ambiguous: ``None``, and the verifier should search.
    """
    if name in weights:
        return name
    hits = [k for k in weights if k.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def _load_path(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The file's (or folder's) tensors, not yet materialised where avoidable, and the
    number of bytes they come from (for ``check_memory``)."""
    if path.is_dir():
        return _load_folder(path)
    if path.suffix.lower() == ".json" and path.with_suffix(".safetensors").is_file():
        path = path.with_suffix(".safetensors")  # a ticket named by its sidecar
    if not path.exists():
        alt = path.with_name(path.name + ".safetensors")  # a ticket named without suffix
        if alt.is_file():
            path = alt
        else:
            raise TicketmarkError(f"no suspect model at {path}")
    if not path.is_file():
        raise TicketmarkError(f"{path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS:
        return _load_safetensors(path)
    if suffix in ONNX:
        return _load_onnx(path)
    if suffix in PICKLE_FREE_TORCH:
        return _load_torch(path)
    # Unknown suffix: sniff. safetensors starts with a little-endian header length and '{'.
    with path.open("rb") as fh:
        head = fh.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        return _load_safetensors(path)
    if head.startswith(b"PK"):  # torch.save's zip archive
        return _load_torch(path)
    return _load_onnx(path)


def _inside(folder: Path, path: Path) -> Path:
    """``path`` if it resolves (links followed) to a file inside ``folder``; else an error.

    A shard that is a link to the verifier's own ticket (or any file elsewhere) would make
    the verifier read, and report on, a file the suspect's holder does not own.
    """
    base = folder.resolve()
    try:
        target = path.resolve()
        inside = target.is_relative_to(base) and target.is_file()
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        raise TicketmarkError(f"{folder}: {path.name} is a link to a file outside the "
                              "folder; a model folder is read only through its own files")
    return path


def _load_folder(folder: Path) -> tuple[dict[str, torch.Tensor], int]:
    """A run directory (ticket), or a model folder: sharded safetensors, ONNX, checkpoints."""
    ticket = folder / "ticket.safetensors"
    if ticket.is_file():
        return _load_safetensors(_inside(folder, ticket))
    for suffixes in (SAFETENSORS, ONNX, PICKLE_FREE_TORCH):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes
                       and (p.is_file() or p.is_symlink()))
        if not files:
            continue
        if len(files) > 10_000:
            raise TicketmarkError(f"{folder} holds {len(files)} model files; name one")
        if suffixes is ONNX and len(files) > 1:
            raise TicketmarkError(f"{folder} holds {len(files)} ONNX files; name one")
        merged: dict[str, torch.Tensor] = {}
        read = 0
        for f in files:  # shards of one model: disjoint keys
            part, n = _load_path(_inside(folder, f))
            read += n
            clash = sorted(set(part) & set(merged))
            if clash:
                raise TicketmarkError(f"{folder}: {f.name} repeats tensor {clash[0]!r} of "
                                      "another file; give the one model file to verify")
            merged |= part
            if len(merged) > MAX_TENSORS:
                raise TicketmarkError(f"{folder} holds more than {MAX_TENSORS} tensors")
        return merged, read
    raise TicketmarkError(f"{folder} holds no model file (.safetensors, .onnx, .pt, .pth, "
                          ".bin, .ckpt)")


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """safetensors checks that every tensor's offsets cover exactly shape x item size and
    lie inside the file, so tensors never take more than the file's bytes before
    conversion (float8 -> float32 at most 4x)."""
    from safetensors import SafetensorError, safe_open

    try:
        size = path.stat().st_size
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if len(keys) > MAX_TENSORS:
                raise TicketmarkError(f"{path} claims {len(keys)} tensors (limit {MAX_TENSORS})")
            # A ticket: only its trained weights count, never the holder's mask or rewind.
            is_ticket = any(k.startswith("state.") for k in keys) and any(
                k.startswith("mask.") for k in keys)
            if is_ticket:
                keys = [k for k in keys if k.startswith("state.")]
            widened = _float8_entries(path)
            return {k: _read_widened(path, widened[k]) if k in widened else f.get_tensor(k)
                    for k in keys}, size
    except (SafetensorError, ValueError, OSError, RuntimeError, TypeError) as exc:
        raise TicketmarkError(f"{path} is not a readable safetensors file "
                              f"({_short(exc)})") from None


# safetensors float8 kinds: read as float32 a chunk at a time (see _read_widened).
_FLOAT8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
           "F8_E5M2": torch.float8_e5m2, "F8_E5M2FNUZ": torch.float8_e5m2fnuz}
_CHUNK = 1 << 20


def _float8_entries(path: Path) -> dict[str, tuple[torch.dtype, list[int], int, int]]:
    """float8 tensors of a safetensors file (already validated by ``safe_open``):
    name -> (dtype, shape, absolute start, byte count)."""
    import json

    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    out = {}
    for name, entry in header.items():
        if isinstance(entry, dict) and entry.get("dtype") in _FLOAT8:
            start, end = entry["data_offsets"]
            out[name] = (_FLOAT8[entry["dtype"]], list(entry["shape"]), 8 + n + start,
                         end - start)
    return out


def _read_widened(path: Path, entry: tuple[torch.dtype, list[int], int, int]) -> torch.Tensor:
    """A float8 tensor as float32, read in chunks with plain reads: the peak is the float32
    tensor (4x its bytes) and one chunk, not also the whole source mapped in memory."""
    dtype, shape, start, nbytes = entry
    out = torch.empty(nbytes, dtype=torch.float32)
    buf = bytearray(min(_CHUNK, max(nbytes, 1)))
    with path.open("rb") as fh:
        fh.seek(start)
        done = 0
        while done < nbytes:
            view = memoryview(buf)[: min(len(buf), nbytes - done)]
            got = fh.readinto(view)
            if not got:
                raise ValueError("file ended inside a tensor")
            out[done : done + got].copy_(torch.frombuffer(view[:got], dtype=dtype))
            done += got
    return out.reshape(shape)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _check_zip(path: Path) -> int:
    """The archive's size; refused if its members inflate beyond it (a zip bomb)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TicketmarkError(f"{path} is not a readable torch state dict ({_short(exc)})"
                              ) from None
    if len(infos) > 2 * MAX_TENSORS:
        raise TicketmarkError(f"{path} holds {len(infos)} archive members")
    inflated = sum(i.file_size for i in infos)
    if inflated > size + MEMORY_SLACK:
        raise TicketmarkError(f"{path}: its archive members inflate to {inflated:,} bytes "
                              f"from {size:,}; torch.save never compresses, refused")
    return size


def _load_torch(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """A ``torch.save`` zip, memory-mapped (nothing materialised until ``check_memory``
    has seen the shapes), or a legacy (pre-zip) file read whole."""
    is_zip = zipfile.is_zipfile(path)
    size = _check_zip(path) if is_zip else path.stat().st_size
    try:
        with warnings.catch_warnings():  # a damaged pickle's "protocol 188" is not a 2nd line
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        text = str(exc)
        if "Unsupported global" in text:
            raise TicketmarkError(
                f"{path} is a pickled Python object, not a state dict; ticketmark never "
                "unpickles code (save model.state_dict(), or pass the nn.Module in "
                "Python)") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        after = [lines[i + 1] for i, ln in enumerate(lines[:-1]) if "Unpickler error" in ln]
        reason = (after or lines or [type(exc).__name__])[0][:120]
        raise TicketmarkError(f"{path} is not a readable torch state dict ({reason})"
                              ) from None
    if isinstance(obj, torch.Tensor):
        raise TicketmarkError(f"{path} holds a single tensor, not a state dict")
    if not isinstance(obj, Mapping):
        raise TicketmarkError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors = _tensors_of(_model_part(obj), str(path))
    check_memory(tensors, size, str(path))
    # Own copies: nothing stays mapped to a file the suspect's holder wrote.
    # (Empty ones are dropped by normalise: a contiguous copy of (0, 330, 6e7, 5e8) overflows
    # torch's stride arithmetic.)
    return {k: t.clone(memory_format=torch.contiguous_format) if t.numel() else t
            for k, t in tensors.items()}, size


def _model_part(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model's weights inside a training checkpoint ({'state_dict': ..., 'epoch': 3})."""
    for key in CHECKPOINT_KEYS:
        part = obj.get(key)
        if isinstance(part, Mapping) and any(_has_tensor(v) for v in part.values()):
            return part
    return {k: v for k, v in obj.items()
            if not (isinstance(k, str) and k.lower().startswith(NOT_WEIGHTS))}


def _has_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (
        isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values()))


def _tensors_of(obj: Mapping[str, Any], where: str, depth: int = 0) -> dict[str, torch.Tensor]:
    """Tensor leaves of nested dicts, with dotted names; other values are ignored."""
    if depth > 8:
        raise TicketmarkError(f"{where} nests dicts deeper than 8 levels")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            out |= {f"{name}.{k}": v for k, v in _tensors_of(value, where, depth + 1).items()}
        if len(out) > MAX_TENSORS:
            raise TicketmarkError(f"{where} holds more than {MAX_TENSORS} tensors")
    if not out:
        raise TicketmarkError(f"{where} holds no tensors")
    return out


# Packed ONNX kinds: bits per value (the rest take their numpy item size).
_ONNX_BITS = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2, 27: 6, 28: 6}
_ONNX_SKIP = {0, 8, 14, 15}  # UNDEFINED, STRING, COMPLEX64, COMPLEX128: not weights
# Bytes per value once read: integer kinds as torch keeps or widens them, floats as float32.
_ONNX_OUT_BYTES = {2: 1, 3: 1, 5: 2, 6: 4, 7: 8, 9: 1, 4: 4, 12: 8, 13: 8, 21: 1, 22: 1,
                   25: 1, 26: 1}


def _load_onnx(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """Initializers (and tensor constants) of an ONNX graph, subgraphs included.

    Each tensor's shape x item size is checked against the bytes it has (inline, or the
    range of its external file) before it is converted, and all of them together against
    ``MEMORY_FACTOR`` x the bytes of the model and its distinct external files.
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise TicketmarkError("reading ONNX files needs the 'onnx' package") from None
    try:
        read = path.stat().st_size
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise TicketmarkError(f"{path} is not a readable ONNX file ({type(exc).__name__})"
                              ) from None
    protos = []
    externals: dict[Path, int] = {}
    for name, proto in _onnx_tensors(model.graph):
        if proto.data_type in _ONNX_SKIP:
            continue
        protos.append((name, proto))
        if len(protos) > MAX_TENSORS:
            raise TicketmarkError(f"{path} holds more than {MAX_TENSORS} tensors")
    # Shapes and the bytes behind them first, for every tensor; then convert.
    planned = 0
    for name, proto in protos:
        numel = _onnx_numel(proto, name, path)
        nbytes = _onnx_nbytes(proto, numel, name, path)
        if proto.data_location == onnx.TensorProto.EXTERNAL:
            target, offset = _check_external(proto, path, nbytes)
            if target not in externals:
                externals[target] = target.stat().st_size
        elif proto.HasField("raw_data") and len(proto.raw_data) != nbytes:
            raise TicketmarkError(f"{path}: tensor {name!r} has shape {list(proto.dims)} "
                                  f"({nbytes:,} bytes) but {len(proto.raw_data):,} bytes of "
                                  "data")
        planned += numel * _ONNX_OUT_BYTES.get(proto.data_type, 4)
    read += sum(externals.values())
    if planned > MEMORY_FACTOR * read + MEMORY_SLACK:
        raise TicketmarkError(f"{path}: its tensors would take {planned:,} bytes from "
                              f"{read:,} bytes of file; initializers sharing external data "
                              f"are refused (limit {MEMORY_FACTOR}x the files)")
    out: dict[str, torch.Tensor] = {}
    for name, proto in protos:
        if proto.data_location == onnx.TensorProto.EXTERNAL:
            _read_external(proto, path)
        out[name] = _onnx_array(proto, name, path)
    if not out:
        raise TicketmarkError(f"{path} holds no initializers (weights)")
    return out, read


def _onnx_numel(proto: Any, name: str, path: Path) -> int:
    dims = list(proto.dims)
    if len(dims) > 16 or any(d < 0 for d in dims):
        raise TicketmarkError(f"{path}: tensor {name!r} has shape {dims[:17]}")
    return math.prod(dims)


def _onnx_nbytes(proto: Any, numel: int, name: str, path: Path) -> int:
    from onnx import helper

    bits = _ONNX_BITS.get(proto.data_type)
    if bits is None:
        try:
            bits = 8 * helper.tensor_dtype_to_np_dtype(proto.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            raise TicketmarkError(f"{path}: tensor {name!r} has unknown data type "
                                  f"{proto.data_type}") from None
    return (numel * bits + 7) // 8


def _onnx_array(proto: Any, name: str, path: Path) -> torch.Tensor:
    """One tensor as float32, int8 (packed ints), or its own integer/bool kind."""
    import numpy as np
    from onnx import numpy_helper

    try:
        # 1e300 as float32 is inf: the verifier's concern, not a warning line beside it.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = numpy_helper.to_array(proto)
            if array.dtype.kind not in "biuf":  # ml_dtypes: bfloat16, float8/6/4, int4/2
                is_int = "int" in array.dtype.name
                array = array.astype(np.int8 if is_int else np.float32)
            elif array.dtype.kind == "f" and array.dtype != np.float32:
                array = array.astype(np.float32)
            else:
                array = np.array(array, copy=True)  # own, writable memory for torch
        return torch.from_numpy(array)
    except TicketmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed tensor payloads
        raise TicketmarkError(f"{path}: tensor {name!r} is unreadable "
                              f"({type(exc).__name__})") from None


def _onnx_tensors(graph: Any, depth: int = 0) -> Iterable[tuple[str, Any]]:
    if depth > 8:
        raise TicketmarkError("ONNX subgraphs nest deeper than 8 levels")
    for init in graph.initializer:
        yield init.name, init
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.HasField("t") \
                    and len(attr.t.dims) >= 1:
                yield (node.output[0] if node.output else node.name), attr.t
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g, depth + 1)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub, depth + 1)


def _external_entry(proto: Any) -> dict[str, str]:
    return {e.key: e.value for e in proto.external_data}


def _check_external(proto: Any, model_path: Path, nbytes: int) -> tuple[Path, int]:
    """External data must be a file inside the model's folder (no ../../owner.pem), and the
    byte range the tensor needs must lie inside that file."""
    entry = _external_entry(proto)
    location = entry.get("location", "")
    base = model_path.parent.resolve()
    try:
        target = (base / location).resolve()
        inside = target.is_relative_to(base) and target.is_file()
    except (ValueError, OSError, RuntimeError):  # a NUL byte, a long name, a link loop
        inside = False
    if not location or Path(location).is_absolute() or not inside:
        raise TicketmarkError(f"{model_path}: tensor {proto.name!r} points at external data "
                              f"{location[:100]!r} outside the model's folder")
    try:
        offset = int(entry.get("offset", "0"))
        length = int(entry["length"]) if "length" in entry else None
    except ValueError:
        raise TicketmarkError(f"{model_path}: tensor {proto.name!r} has a malformed external "
                              "offset or length") from None
    size = target.stat().st_size
    if offset < 0 or (length is not None and length != nbytes) or offset + nbytes > size:
        raise TicketmarkError(
            f"{model_path}: tensor {proto.name!r} needs {nbytes:,} bytes at offset {offset:,} "
            f"of {location[:100]!r}" + (f" (length says {length:,})" if length is not None
                                        else "") + f", which holds {size:,}")
    return target, offset


def _read_external(proto: Any, model_path: Path) -> None:
    """Move the tensor's checked byte range into ``raw_data`` (exactly the bytes needed)."""
    from onnx import TensorProto

    numel = _onnx_numel(proto, proto.name, model_path)
    nbytes = _onnx_nbytes(proto, numel, proto.name, model_path)
    target, offset = _check_external(proto, model_path, nbytes)
    with target.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise TicketmarkError(f"{model_path}: external data of {proto.name!r} ended early")
    proto.raw_data = data
    del proto.external_data[:]
    proto.data_location = TensorProto.DEFAULT
