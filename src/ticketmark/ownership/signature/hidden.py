"""The hidden half of the signature: key-derived bits spread over the whole ticket.

The QR block is human-readable but visible: anyone who looks at the mask sees its finder
patterns and can overwrite or shuffle the 441 kernels it occupies. The hidden signature
puts ``bits`` more modules where nobody can find them before the reveal:

* the seed comes from ``ownership.keyed`` (a deterministic Ed25519 signature of the owner
  over a per-claim nonce), so only the key's holder can reveal it and the claim publishes
  only a commitment to it;
* positions (layer, output channel, input channel) are drawn uniformly over every eligible
  kernel of the ticket outside the QR block, and bits are fair coins, both from a SHAKE-256
  stream of the seed (a stream fixed by the standard, not by a library's RNG version);
* a dark bit is a kernel with at least ``min_entries`` unpruned (and floored) weights, a
  light bit an empty kernel, exactly like the QR's modules.

Why the p-value is exact: for a model made without the seed, each bit is a fair coin drawn
independently of the model, so whatever the model's connectivity, each position agrees
with probability 1/2, independently: the agreement count is Binomial(K, 1/2) under the
null, for any architecture, density or correlation structure of the mask.

Why the threshold is far below the QR's: a forger can grind nonces (or keys) until some
seed happens to agree with a model they hold; each try costs one signature and K lookups.
A threshold of 1e-30 makes that search hopeless, and an owner's bits, K = 1024 by default,
still clear it at 70% agreement (p ~ 1e-37).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import binom

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_json
from ticketmark.ownership import keyed

CONTEXT = "signature-hidden"
DEFAULT_BITS = 1024
MIN_BITS = 128  # 2^-128 = 3e-39: a near-perfect reading of fewer could not pass THRESHOLD
THRESHOLD = 1e-30
LN10 = math.log(10.0)


@dataclass(frozen=True)
class Layout:
    """What the positions are drawn over: eligible layers and the QR block to avoid."""

    layers: tuple[tuple[str, int, int], ...]  # (name, output channels, input channels)
    bits: int
    block: tuple[str, int, int, int] | None = None  # (layer, row, col, size) of the QR

    def to_json(self) -> dict[str, Any]:
        return {"layers": [list(x) for x in self.layers], "bits": self.bits,
                "block": list(self.block) if self.block else None}

    @classmethod
    def from_json(cls, obj: Any) -> Layout:
        try:
            layers = tuple((str(n), int(o), int(i)) for n, o, i in obj["layers"])
            bits = int(obj["bits"])
            blk = obj.get("block")
            block = (str(blk[0]), int(blk[1]), int(blk[2]), int(blk[3])) if blk else None
        except (KeyError, TypeError, ValueError, IndexError):
            raise TicketmarkError("the claim's hidden-signature layout is malformed") from None
        total = sum(o * i for _, o, i in layers)
        if not layers or any(o < 1 or i < 1 or o * i > 1 << 26 for _, o, i in layers):
            raise TicketmarkError("the claim's hidden-signature layout has invalid layers")
        if not 1 <= bits <= min(total, 1 << 16):
            raise TicketmarkError(f"the claim's hidden signature has {bits} bits; expected "
                                  f"1..{min(total, 1 << 16)}")
        return cls(layers, bits, block)


@dataclass(frozen=True)
class Bits:
    """The drawn positions and bit values (vectors of length K)."""

    layer: np.ndarray  # index into Layout.layers
    row: np.ndarray
    col: np.ndarray
    dark: np.ndarray  # bool

    def per_layer(self, layout: Layout) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = {}
        for idx, (name, _, _) in enumerate(layout.layers):
            sel = self.layer == idx
            if sel.any():
                out[name] = (self.row[sel], self.col[sel], self.dark[sel])
        return out


def new_nonce() -> str:
    return secrets.token_hex(16)


def eligible_layers(mask: dict[str, torch.Tensor], min_entries: int) -> list[tuple[str, int, int]]:
    """Pruned conv layers whose kernels can hold a dark module (not 1x1, not fully dense)."""
    out = []
    for name, m in mask.items():
        if m.dim() == 2:  # a linear layer: one entry per module (``embed.as_kernels``)
            m = m.view(*m.shape, 1, 1)
        if m.dim() == 4 and m.shape[2] * m.shape[3] >= min_entries:
            density = float(m.flatten(2).any(dim=2).float().mean())
            if 0.0 < density < 1.0:
                out.append((name, int(m.shape[0]), int(m.shape[1])))
    return out


def _stream(seed: bytes, label: bytes, n_bytes: int) -> bytes:
    return hashlib.shake_256(b"ticketmark-hidden-bits/1\0" + label + b"\0" + seed).digest(n_bytes)


def draw_bits(seed: bytes, layout: Layout) -> Bits:
    """Positions and bits for ``seed``: uniform without replacement, outside the QR block."""
    sizes = np.array([o * i for _, o, i in layout.layers], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    total = int(offsets[-1])
    block_cells = layout.block[3] ** 2 if layout.block else 0
    if layout.bits > total - block_cells:
        raise TicketmarkError(f"{layout.bits} hidden bits do not fit in {total - block_cells} "
                              "kernels")
    want = layout.bits + block_cells
    n = 2 * want + 64
    while True:  # extend the stream until enough distinct positions outside the block
        raw = np.frombuffer(_stream(seed, b"positions", 8 * n), dtype=">u8").astype(np.uint64)
        flat = (raw % np.uint64(total)).astype(np.int64)
        _, first = np.unique(flat, return_index=True)
        flat = flat[np.sort(first)]
        layer = np.searchsorted(offsets, flat, side="right") - 1
        local = flat - offsets[layer]
        cols = np.array([i for _, _, i in layout.layers], dtype=np.int64)[layer]
        row, col = local // cols, local % cols
        if layout.block is not None:
            name, r0, c0, size = layout.block
            names = [x[0] for x in layout.layers]
            bidx = names.index(name) if name in names else -1
            inside = (layer == bidx) & (row >= r0) & (row < r0 + size) & (col >= c0) \
                & (col < c0 + size)
            keep = ~inside
            layer, row, col = layer[keep], row[keep], col[keep]
        if len(layer) >= layout.bits:
            break
        n *= 2
    k = layout.bits
    dark = (np.frombuffer(_stream(seed, b"bits", k), dtype=np.uint8) & 1).astype(bool)
    return Bits(layer[:k], row[:k], col[:k], dark)


def targets(bits: Bits, layout: Layout) -> dict[str, torch.Tensor]:
    """Per layer an (O, I) int8 map: -1 untouched, 0 light (empty kernel), 1 dark."""
    out = {}
    for idx, (name, o, i) in enumerate(layout.layers):
        sel = bits.layer == idx
        if not sel.any():
            continue
        t = torch.full((o, i), -1, dtype=torch.int8)
        t[torch.from_numpy(bits.row[sel]), torch.from_numpy(bits.col[sel])] = \
            torch.from_numpy(bits.dark[sel].astype(np.int8))
        out[name] = t
    return out


@dataclass(frozen=True)
class Reading:
    """The hidden bits read out of a suspect, with their exact chance p-value."""

    read: int  # positions that could be read (their layer exists with the right shape)
    agree: int
    per_layer: dict[str, tuple[int, int]]  # name -> (agree, read)
    penalty: float = 0.0  # log10 of how many readings the best was chosen from

    @property
    def log10_p(self) -> float:
        """log10 P(Binomial(read, 1/2) >= agree): exact under the null (module docstring),
        times the number of readings tried."""
        if self.read == 0:
            return 0.0
        return float(min(0.0, binom.logsf(self.agree - 1, self.read, 0.5) / LN10
                         + self.penalty))

    def with_penalty(self, log10_factor: float) -> Reading:
        return Reading(self.read, self.agree, self.per_layer, log10_factor)

    def to_json(self) -> dict[str, Any]:
        return {"hidden_bits_read": self.read, "hidden_bits_agree": self.agree,
                "hidden_agreement": self.agree / max(1, self.read),
                "hidden_log10_p": self.log10_p, "hidden_p_value": 10.0 ** self.log10_p,
                "hidden_per_layer": {k: {"agree": a, "read": r}
                                     for k, (a, r) in self.per_layer.items()}}


def read_bits(conns: dict[str, torch.Tensor], bits: Bits, layout: Layout) -> Reading:
    """Compare each layer's recovered connectivity with the bits at their positions."""
    agree = read = 0
    per: dict[str, tuple[int, int]] = {}
    for name, (rows, cols, dark) in bits.per_layer(layout).items():
        conn = conns.get(name)
        shape = next((o, i) for n, o, i in layout.layers if n == name)
        if conn is None or tuple(conn.shape) != shape:
            continue  # a layer the suspect lacks: its positions are simply not counted
        got = conn.numpy()[rows, cols].astype(bool)
        a = int((got == dark).sum())
        per[name] = (a, len(rows))
        agree += a
        read += len(rows)
    return Reading(read, agree, per)


REVEAL_FORMAT = "ticketmark-signature-reveal/1"


def save_reveal(path: str | Path, reveal_token: bytes) -> Path:
    """Write the reveal that opens a claim's hidden bits (owner-only until a dispute)."""
    path = Path(path)
    atomic_write_json(path, {"format": REVEAL_FORMAT, "reveal": keyed.encode(reveal_token)},
                      secret=True)
    return path


def load_reveal(path: str | Path) -> bytes:
    """Read a reveal file; anything malformed is one ``TicketmarkError`` line."""
    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no reveal file at {path}")
    if path.stat().st_size > 1 << 16:
        raise TicketmarkError(f"{path} is too large to be a reveal file")
    try:
        obj = json.loads(path.read_text())
        if not isinstance(obj, dict) or obj.get("format") != REVEAL_FORMAT:
            raise ValueError
        token = keyed.decode(obj["reveal"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise TicketmarkError(f"{path} is not a {REVEAL_FORMAT} file (for trigger claims, "
                              "pass the trigger reveal file instead)") from None
    return token


def open_claim(claim_params: dict[str, Any], public_key: str, reveal_token: bytes
               ) -> tuple[Layout, Bits]:
    """Check the reveal against the claim (key, nonce, commitment) and draw its bits."""
    spec = claim_params.get("hidden")
    if not isinstance(spec, dict):
        raise TicketmarkError("the claim has no hidden signature to reveal")
    layout = Layout.from_json(spec.get("layout"))
    seed = keyed.open_reveal(public_key, CONTEXT, str(spec.get("nonce", "")), reveal_token,
                             str(spec.get("commitment", "")))
    return layout, draw_bits(seed, layout)
