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
ONNX), and ONNX external-data files must sit inside the model's own folder.
"""

from __future__ import annotations

import os
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
        raw = _load_path(Path(suspect))
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
        if t.is_floating_point():
            t = t.float()
        out[name[len(prefix):]] = t.contiguous()
    return out


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


def _load_path(path: Path) -> dict[str, torch.Tensor]:
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
    head = path.open("rb").read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        return _load_safetensors(path)
    if head.startswith(b"PK"):  # torch.save's zip archive
        return _load_torch(path)
    return _load_onnx(path)


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    """A run directory (ticket), or a model folder: sharded safetensors, ONNX, checkpoints."""
    ticket = folder / "ticket.safetensors"
    if ticket.is_file():
        return _load_safetensors(ticket)
    for suffixes in (SAFETENSORS, ONNX, PICKLE_FREE_TORCH):
        files = sorted(p for p in folder.iterdir() if p.is_file()
                       and p.suffix.lower() in suffixes)
        if not files:
            continue
        if suffixes is ONNX and len(files) > 1:
            raise TicketmarkError(f"{folder} holds {len(files)} ONNX files; name one")
        merged: dict[str, torch.Tensor] = {}
        for f in files:  # shards of one model: disjoint keys
            part = _load_path(f)
            clash = sorted(set(part) & set(merged))
            if clash:
                raise TicketmarkError(f"{folder}: {f.name} repeats tensor {clash[0]!r} of "
                                      "another file; give the one model file to verify")
            merged |= part
        return merged
    raise TicketmarkError(f"{folder} holds no model file (.safetensors, .onnx, .pt, .pth, "
                          ".bin, .ckpt)")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if len(keys) > MAX_TENSORS:
                raise TicketmarkError(f"{path} claims {len(keys)} tensors (limit {MAX_TENSORS})")
            # A ticket: only its trained weights count, never the holder's mask or rewind.
            is_ticket = any(k.startswith("state.") for k in keys) and any(
                k.startswith("mask.") for k in keys)
            if is_ticket:
                keys = [k for k in keys if k.startswith("state.")]
            return {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise TicketmarkError(f"{path} is not a readable safetensors file ({exc})") from None


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
    return _tensors_of(_model_part(obj), str(path))


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


def _load_onnx(path: Path) -> dict[str, torch.Tensor]:
    """Initializers (and tensor constants) of an ONNX graph, subgraphs included."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise TicketmarkError("reading ONNX files needs the 'onnx' package") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise TicketmarkError(f"{path} is not a readable ONNX file ({type(exc).__name__})"
                              ) from None
    out: dict[str, torch.Tensor] = {}
    for name, proto in _onnx_tensors(model.graph):
        if proto.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(proto, path)
            onnx.external_data_helper.load_external_data_for_tensor(proto, str(path.parent))
        try:
            array = numpy_helper.to_array(proto)
        except Exception as exc:  # noqa: BLE001 - malformed tensor payloads
            raise TicketmarkError(f"{path}: tensor {name!r} is unreadable "
                                  f"({type(exc).__name__})") from None
        out[name] = torch.from_numpy(array.copy())
        if len(out) > MAX_TENSORS:
            raise TicketmarkError(f"{path} holds more than {MAX_TENSORS} tensors")
    if not out:
        raise TicketmarkError(f"{path} holds no initializers (weights)")
    return out


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


def _check_external(proto: Any, model_path: Path) -> None:
    """External data must be a file inside the model's folder (no ../../owner.pem)."""
    location = next((e.value for e in proto.external_data if e.key == "location"), "")
    base = model_path.parent.resolve()
    target = (base / location).resolve()
    if not location or Path(location).is_absolute() or not target.is_relative_to(base) \
            or not target.is_file():
        raise TicketmarkError(f"{model_path}: tensor {proto.name!r} points at external data "
                              f"{location!r} outside the model's folder")
