"""Weight quantization a thief uses to ship a smaller model: int8 and ternary.

All schemes are symmetric, so an exact zero stays an exact zero (pruned weights remain
pruned unless a weight rounds to zero, which is what quantization does). Biases and
BatchNorm parameters are left in float, as deployment toolchains do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ticketmark.attacks.common import check_nonnegative, clone_model, resolve_names
from ticketmark.errors import TicketmarkError

QUANT_SCHEMES = ("int8", "int8-channel", "ternary")
INT8_LEVELS = 127  # symmetric: -127..127, so zero is representable and the grid is odd


def _int8(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if per_channel and w.dim() > 1:
        amax = w.abs().flatten(1).amax(dim=1).view(-1, *([1] * (w.dim() - 1)))
    else:
        amax = w.abs().amax()
    scale = torch.where(amax > 0, amax / INT8_LEVELS, torch.ones_like(amax))
    return torch.round(w / scale).clamp_(-INT8_LEVELS, INT8_LEVELS) * scale


def _ternary(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """TWN: delta = threshold * mean|w|, alpha = mean of |w| above delta.

    The mean runs over the surviving (non-zero) weights only: with the zeros of a sparse
    ticket included, delta would shrink with sparsity and the attack would get weaker the
    more the owner pruned.
    """
    mag = w.abs()
    alive = mag > 0
    if not bool(alive.any()):
        return w.clone()
    delta = threshold * mag[alive].mean()
    keep = mag > delta
    if not bool(keep.any()):
        return torch.zeros_like(w)
    alpha = mag[keep].mean()
    return torch.sign(w) * keep.to(w.dtype) * alpha


@torch.no_grad()
def quantize(model: nn.Module, *, scheme: str = "int8", threshold: float = 0.7,
             names: list[str] | None = None) -> nn.Module:
    """Quantize the weights of ``names`` (default: every Conv2d/Linear weight).

    ``int8``: one symmetric scale per tensor; ``int8-channel``: one per output channel;
    ``ternary``: values in {-a, 0, +a} per tensor with TWN's threshold (``threshold``
    times the mean surviving |w|; 0.7 as in the TWN paper).
    """
    if scheme not in QUANT_SCHEMES:
        raise TicketmarkError(f"unknown quantization scheme {scheme!r}; choose one of: "
                              f"{', '.join(QUANT_SCHEMES)}")
    threshold = check_nonnegative(threshold, "ternary threshold")
    out = clone_model(model)
    params = dict(out.named_parameters())
    for n in resolve_names(out, names):
        w = params[n]
        if scheme == "ternary":
            w.copy_(_ternary(w.float(), threshold).to(w.dtype))
        else:
            w.copy_(_int8(w.float(), per_channel=scheme == "int8-channel").to(w.dtype))
    return out


@dataclass
class BitReport:
    """How many bits per weight the quantized model really needs.

    Measured per output channel (row), so a per-channel scheme is not charged for having
    a different scale in each row: ``bits`` is log2 of the largest number of distinct
    values in any row (a fixed-length code with one codebook per row), ``entropy`` the
    mean Shannon entropy of a row's values (what an entropy coder would need). Both are
    averaged over layers weighted by size; float weights give ~log2(row length).
    """

    bits: float
    entropy: float
    per_layer: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, float]:
        return {"effective_bits": round(self.bits, 4), "entropy_bits": round(self.entropy, 4)}


def _row_alphabet(w: torch.Tensor) -> tuple[int, float]:
    """(most distinct values in a row, mean entropy of a row in bits), vectorised."""
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    r, c = rows.shape
    s = rows.sort(dim=1).values
    new_run = torch.ones_like(s, dtype=torch.bool)
    new_run[:, 1:] = s[:, 1:] != s[:, :-1]
    distinct = int(new_run.sum(dim=1).max())
    starts = torch.nonzero(new_run.flatten()).flatten()  # first index of each run
    lengths = torch.diff(starts, append=torch.tensor([r * c]))
    p = lengths.double() / c
    ent = torch.zeros(r, dtype=torch.float64).index_add_(0, starts // c, -p * torch.log2(p))
    return distinct, float(ent.mean())


@torch.no_grad()
def effective_bits(model: nn.Module, names: list[str] | None = None) -> BitReport:
    """Measure the value alphabet of each weight tensor's rows (see ``BitReport``)."""
    params = dict(model.named_parameters())
    per_layer: dict[str, dict[str, float]] = {}
    total = bits = ent = 0.0
    for n in resolve_names(model, names):
        w = params[n].detach().cpu().float()
        distinct, layer_ent = _row_alphabet(w)
        layer_bits = math.log2(distinct) if distinct > 1 else 0.0
        per_layer[n] = {"bits": layer_bits, "entropy": layer_ent, "values": float(distinct)}
        total += w.numel()
        bits += layer_bits * w.numel()
        ent += layer_ent * w.numel()
    return BitReport(bits / max(total, 1), ent / max(total, 1), per_layer)
