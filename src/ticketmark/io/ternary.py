"""The compact ternary format: 2-bit codes and one scale per layer, beside the float ticket.

A ternary ticket's Conv/Linear weights take only the values {-a, 0, +a} (one ``a`` per
layer), so 32-bit floats waste 30 of every 32 bits. ``NAME.tern`` (a safetensors file, so
loading never unpickles) stores each such weight as 2-bit codes, four to a byte:

    0: zero, pruned by the mask      1: +a      2: -a      3: zero, but kept by the mask

The fourth code is what makes the mask free: a ternary threshold zeroes some weights the
mask keeps, and a verifier or a later retraining must still tell those apart from pruned
ones, so the mask of every masked layer is exactly ``code != 0``. ``scale.NAME`` holds ``a``
(float32); every other tensor of the state (biases, BatchNorm, layers that are not
ternary) is stored as it is under ``float.NAME``. The safetensors header's metadata holds
the architecture, dataset, which layers are masked and the float ticket's fingerprint.

Decoding writes ``+a``, ``-a`` and ``+0.0`` with ``torch.where``, and ``ternarize`` builds
its ticket through the same decoder, so ``load_ternary(save_ternary(t))`` equals the
ternary ticket bit for bit (signed zeros included). The rewind weights are not stored: a
compact file is what one ships, not what one retrains from (the float ticket keeps them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_bytes
from ticketmark.io.untrusted import check_int, check_str, parse_json, read_bytes_limited, show
from ticketmark.models import MODELS, build_model
from ticketmark.sparsity.mask import Mask

FORMAT = "ticketmark-ternary/1"
SUFFIX = ".tern"
MAX_TERNARY_BYTES = 1024**3  # 2-bit codes: a billion-byte file already holds 4e9 weights
MAX_META_CHARS = 16 * 1024**2
PRUNED, PLUS, MINUS, KEPT_ZERO = 0, 1, 2, 3


@dataclass
class TernaryLayer:
    """One layer's codes (uint8, one code per weight, not yet packed) and scale."""

    codes: torch.Tensor
    scale: torch.Tensor  # float32, 0-dim

    def decode(self) -> torch.Tensor:
        """The float32 weights {-a, 0, +a}; +0.0 for every zero (bit-exact on reload)."""
        a = self.scale.to(torch.float32)
        zero = torch.zeros((), dtype=torch.float32)
        return torch.where(self.codes == PLUS, a, torch.where(self.codes == MINUS, -a, zero))


def ternary_path(path: str | Path) -> Path:
    """``x`` / ``x.safetensors`` / ``x.tern`` -> ``x.tern`` (the compact file of ticket x)."""
    p = Path(path)
    if p.suffix in {".safetensors", ".json", SUFFIX}:
        return p.with_suffix(SUFFIX)
    return p.with_name(p.name + SUFFIX)


def encode_layer(weight: torch.Tensor, mask: torch.Tensor | None, name: str) -> TernaryLayer:
    """Codes and scale of a weight that is already ternary; refuses any other weight.

    ``mask`` (None: the layer is not pruned) decides between codes 0 and 3 for zeros; a
    non-zero weight where the mask prunes is refused too (it would be lost).
    """
    w = weight.detach().cpu().float()
    mag = w.abs()
    nonzero = mag > 0
    a = mag.max() if bool(nonzero.any()) else torch.zeros((), dtype=torch.float32)
    if not bool(torch.isfinite(a)) or bool((nonzero & (mag != a)).any()):
        raise TicketmarkError(f"weight {name} is not ternary (its non-zero entries differ in "
                              "magnitude); ternarize the ticket first")
    codes = torch.full(w.shape, PRUNED, dtype=torch.uint8)
    codes[w > 0] = PLUS
    codes[w < 0] = MINUS
    if mask is not None:
        keep = mask.bool().cpu()
        if bool((nonzero & ~keep).any()):
            raise TicketmarkError(f"weight {name} is non-zero where its mask prunes it")
        codes[keep & ~nonzero] = KEPT_ZERO
    return TernaryLayer(codes, a.reshape(()).clone())


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """Four 2-bit codes per byte, first code in the lowest bits; padded with code 0."""
    flat = codes.flatten().to(torch.uint8)
    pad = (-len(flat)) % 4
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8)])
    q = flat.view(-1, 4)
    return q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)


def unpack_codes(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of ``pack_codes`` for a tensor of ``shape``."""
    n = math.prod(shape)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)
    codes = (packed.to(torch.uint8)[:, None] >> shifts) & 3
    return codes.flatten()[:n].reshape(shape)


def packed_length(numel: int) -> int:
    return (numel + 3) // 4


def save_ternary(path: str | Path, ticket: Any, layers: list[str]) -> Path:
    """Write ``ticket`` (whose ``layers`` weights are ternary) as one compact file.

    Returns the path written (``NAME.tern``). Nothing is written if any layer is not
    ternary.
    """
    path = ternary_path(path)
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in layers:
        if name not in ticket.state:
            raise TicketmarkError(f"the ticket has no weight {name!r}")
        masked = name in ticket.mask
        layer = encode_layer(ticket.state[name], ticket.mask[name] if masked else None, name)
        tensors[f"codes.{name}"] = pack_codes(layer.codes).contiguous()
        tensors[f"scale.{name}"] = layer.scale.contiguous()
        info[name] = {"shape": list(ticket.state[name].shape), "masked": masked}
    for key, value in ticket.state.items():
        if key not in info:
            tensors[f"float.{key}"] = value.detach().cpu().contiguous()
    unternary = sorted(set(ticket.mask) - set(info))
    if unternary:  # their mask would be lost: it lives in the codes
        raise TicketmarkError(f"masked layer {unternary[0]} is not among the ternary layers")
    header = {
        "model": ticket.model_name, "dataset": ticket.dataset,
        "in_channels": ticket.in_channels, "num_classes": ticket.num_classes,
        "image_size": ticket.image_size, "layers": info,
        "source_fingerprint": ticket.fingerprint(),
        "test_acc": (ticket.meta.get("metrics") or [{}])[-1].get("test_acc"),
    }
    blob = save(tensors, metadata={"format": FORMAT, "ticket": json.dumps(header)})
    atomic_write_bytes(path, blob)
    return path


def _metadata(blob: bytes, src: str) -> dict[str, str] | None:
    """The safetensors header's ``__metadata__``, read from the bytes already in memory."""
    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    if n < 2 or 8 + n > len(blob):
        raise TicketmarkError(f"{src} is not a readable safetensors file (bad header length)")
    head = parse_json(blob[8:8 + n], src, "compact ternary ticket")
    meta = head.get("__metadata__") if isinstance(head, dict) else None
    return meta if isinstance(meta, dict) else None


def _header(meta: dict[str, str] | None, src: str) -> dict[str, Any]:
    if not meta or meta.get("format") != FORMAT:
        found = show((meta or {}).get("format"))
        raise TicketmarkError(f"{src} is not a compact ternary ticket (format {found}, "
                              f"expected {FORMAT!r})")
    text = meta.get("ticket", "")
    if len(text) > MAX_META_CHARS:
        raise TicketmarkError(f"{src}: header metadata too large")
    header = parse_json(text, src, "compact ternary ticket")
    if not isinstance(header, dict) or not isinstance(header.get("layers"), dict):
        raise TicketmarkError(f"{src}: header metadata is not an object with 'layers'")
    return header


def load_ternary(path: str | Path) -> Any:
    """Read a ``.tern`` file back into a ``Ticket`` (float32 weights {-a, 0, +a}, the mask
    from the codes, no rewind weights); every field is checked, since the file may be a
    thief's."""
    from ticketmark.io.ticket import DIM_RANGES, Ticket

    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no compact ternary ticket at {path}")
    src = str(path)
    blob = read_bytes_limited(path, MAX_TERNARY_BYTES, "compact ternary ticket")
    header = _header(_metadata(blob, src), src)
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, OSError, RuntimeError, TypeError) as exc:
        raise TicketmarkError(f"{path} is not a readable safetensors file ({exc})") from None
    model = check_str(header.get("model"), "model", src, 100)
    if model not in MODELS:
        raise TicketmarkError(f"{src}: unknown model {show(model)}")
    dataset = check_str(header.get("dataset"), "dataset", src, 1000)
    dims = tuple(check_int(header.get(k), k, lo, hi, src) for k, (lo, hi) in DIM_RANGES.items())
    with torch.device("meta"):
        skeleton = build_model(model, *dims)
    expected = skeleton.state_dict()
    state: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for name, spec in header["layers"].items():
        if name not in expected or not isinstance(spec, dict):
            raise TicketmarkError(f"{src}: layer {show(name)} is not a weight of {model}")
        shape = tuple(expected[name].shape)
        if spec.get("shape") != list(shape):
            raise TicketmarkError(f"{src}: layer {name} has shape {show(spec.get('shape'))}, "
                                  f"expected {list(shape)}")
        packed, scale = tensors.get(f"codes.{name}"), tensors.get(f"scale.{name}")
        if packed is None or scale is None:
            raise TicketmarkError(f"{src}: layer {name} has no codes or no scale")
        if packed.dtype != torch.uint8 or packed.shape != (packed_length(math.prod(shape)),):
            raise TicketmarkError(f"{src}: codes of {name} do not fit its shape {list(shape)}")
        if scale.dtype != torch.float32 or scale.numel() != 1 or not bool(
                torch.isfinite(scale).all()) or float(scale) < 0:
            raise TicketmarkError(f"{src}: scale of {name} is not one finite float32 >= 0")
        layer = TernaryLayer(unpack_codes(packed, shape), scale.reshape(()))
        state[name] = layer.decode()
        if spec.get("masked") is True:
            masks[name] = layer.codes != PRUNED
    for key, want in expected.items():
        if key in state:
            continue
        value = tensors.get(f"float.{key}")
        if value is None or value.shape != want.shape or \
                value.dtype.is_floating_point != want.dtype.is_floating_point:
            raise TicketmarkError(f"{src}: tensor {key} is missing or does not match {model}")
        state[key] = value
    known = {f"{p}.{k}" for k in header["layers"] for p in ("codes", "scale")} | {
        f"float.{k}" for k in expected if k not in header["layers"]}
    extra = sorted(set(tensors) - known)
    if extra:
        raise TicketmarkError(f"{src}: unexpected tensor {show(extra[0])}")
    forward = list(expected)
    ticket = Ticket(model, dataset, *dims, state={k: state[k] for k in forward},
                    mask=Mask({k: masks[k] for k in forward if k in masks}), rewind=None,
                    meta={"ternary_file": {"source_fingerprint": header.get("source_fingerprint"),
                                           "test_acc": header.get("test_acc")}})
    ticket.build()
    return ticket
