"""Derived trigger sets: N abstract images and labels drawn from an HMAC-SHA256 stream.

Why HMAC and not a seeded PRNG: the set must be a one-way function of the owner's secret,
bit-identical on every machine and every NumPy/PyTorch version, so that anyone holding the
revealed seed regenerates exactly what the owner committed to, and nobody can work back
from a set they like (inputs the model already maps to chosen labels) to a seed. HMAC in
counter mode gives such a stream; the drawing below uses only element-wise IEEE arithmetic
(no BLAS reductions, no library RNG), so its output does not depend on the platform.

Labels come from a separate part of the stream than the pixels. For any model that was not
trained on the set, its prediction on an image is therefore independent of the image's
label, and a match happens with probability exactly ``1/classes``: the null of the
binomial test holds whatever the model's natural biases are.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.errors import TicketmarkError

GENERATOR_VERSION = "ticketmark-trigger-gen/1"
SEED_BYTES = 32
_GRID = 5  # low-resolution noise grid, bilinearly upsampled: smooth blobs, not pixel noise
_SHAPES = 4  # ellipses / rectangles painted over the blobs
_STROKES = 2  # line segments painted last
MAX_SIZE = 100_000
MAX_ELEMENTS = 1 << 24  # bounds memory when regenerating from an untrusted claim


@dataclass(frozen=True)
class TriggerParams:
    """What the set looks like: published in the claim and covered by the commitment.

    ``lo``/``hi`` map generated intensities [0, 1] onto the range of the model's normalised
    inputs, so triggers live where real inputs live.
    """

    size: int
    channels: int
    height: int
    width: int
    classes: int
    lo: float
    hi: float

    def validate(self) -> TriggerParams:
        if not 1 <= self.size <= MAX_SIZE:
            raise TicketmarkError(f"trigger set size must be in 1..{MAX_SIZE}, got {self.size}")
        if self.channels < 1 or self.height < 1 or self.width < 1:
            raise TicketmarkError(f"bad trigger input shape {self.shape}")
        if self.height * self.width * self.channels > 1 << 22:
            raise TicketmarkError(f"trigger input shape {self.shape} is too large")
        if self.size * self.height * self.width * self.channels > MAX_ELEMENTS:
            raise TicketmarkError(f"{self.size} trigger inputs of shape {self.shape} exceed "
                                  f"{MAX_ELEMENTS} values (a claim may not ask for more)")
        if not 2 <= self.classes <= 1_000_000:
            raise TicketmarkError(f"trigger sets need >= 2 classes, got {self.classes}")
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise TicketmarkError(f"bad trigger intensity range [{self.lo}, {self.hi}]")
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TriggerParams:
        """Parse params from an untrusted claim; any problem is a TicketmarkError."""
        try:
            p = cls(size=int(d["size"]), channels=int(d["channels"]), height=int(d["height"]),
                    width=int(d["width"]), classes=int(d["classes"]), lo=float(d["lo"]),
                    hi=float(d["hi"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TicketmarkError(f"claim holds malformed trigger parameters ({exc})") from None
        return p.validate()


@dataclass
class TriggerSet:
    """Inputs ``x`` (N, C, H, W) float32 in model-input space, labels ``y`` (N,) int64.

    ``keep`` marks the slots the owner trains and the verifier queries; slots the owner
    excluded (their label equalled the plain model's natural prediction) count as misses in
    the test, so excluding cannot help a forger (see ``stats``).
    """

    x: torch.Tensor
    y: torch.Tensor
    keep: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def kept(self) -> int:
        return int(self.keep.sum())

    def excluded(self) -> list[int]:
        return [int(i) for i in torch.nonzero(~self.keep).flatten()]

    def with_excluded(self, excluded: list[int]) -> TriggerSet:
        keep = torch.ones(len(self), dtype=torch.bool)
        if excluded:
            idx = torch.tensor(excluded, dtype=torch.long)
            if int(idx.min()) < 0 or int(idx.max()) >= len(self):
                raise TicketmarkError(f"excluded trigger slots out of range 0..{len(self) - 1}")
            keep[idx] = False
        return TriggerSet(self.x, self.y, keep)


def random_seed() -> bytes:
    return os.urandom(SEED_BYTES)


def derive_seed(key: Ed25519PrivateKey, context: str = "") -> bytes:
    """A seed the owner can always re-derive from the private key, one per ``context``.

    HMAC-SHA256 keyed with the raw private key: revealing the seed later reveals nothing
    about the key, and different tickets (contexts) get unrelated seeds.
    """
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return hmac.new(raw, b"ticketmark-trigger-seed/1\0" + context.encode(),
                    hashlib.sha256).digest()


def _stream(seed: bytes, purpose: str, nbytes: int) -> np.ndarray:
    """``nbytes`` bytes of HMAC-SHA256(seed, version | purpose | counter), counter mode."""
    prefix = f"{GENERATOR_VERSION}|{purpose}|".encode()
    blocks = -(-nbytes // 32)
    out = b"".join(hmac.new(seed, prefix + i.to_bytes(8, "big"), hashlib.sha256).digest()
                   for i in range(blocks))
    return np.frombuffer(out[:nbytes], dtype=np.uint8)


def _uniform(seed: bytes, purpose: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform float64 in [0, 1) with 32 bits of resolution, exactly reproducible."""
    count = int(np.prod(shape))
    words = _stream(seed, purpose, 4 * count).view(">u4").astype(np.float64)
    return (words / 4294967296.0).reshape(shape)


def _labels(seed: bytes, size: int, classes: int) -> np.ndarray:
    """Uniform labels: floor(u * classes) with u from 32 bits (bias below classes / 2^32)."""
    u = _uniform(seed, "labels", (size,))
    return np.minimum(np.floor(u * classes), classes - 1).astype(np.int64)


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of (N, C, G, G) to (N, C, h, w) with element-wise arithmetic."""
    g = grid.shape[-1]
    ys = np.arange(h, dtype=np.float64) * (g - 1) / max(h - 1, 1)
    xs = np.arange(w, dtype=np.float64) * (g - 1) / max(w - 1, 1)
    y0 = np.minimum(np.floor(ys).astype(np.int64), g - 2)
    x0 = np.minimum(np.floor(xs).astype(np.int64), g - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[..., y0[:, None], x0[None, :]]
    b = grid[..., y0[:, None], x0[None, :] + 1]
    c = grid[..., y0[:, None] + 1, x0[None, :]]
    d = grid[..., y0[:, None] + 1, x0[None, :] + 1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx)


def _images(seed: bytes, p: TriggerParams) -> np.ndarray:
    """Smoothed noise with random ellipses, rectangles and strokes painted over it, in [0, 1]."""
    n, c, h, w = p.size, p.channels, p.height, p.width
    img = 0.15 + 0.7 * _upsample(_uniform(seed, "blobs", (n, c, _GRID, _GRID)), h, w)
    yy = ((np.arange(h, dtype=np.float64) + 0.5) / h)[None, None, :, None]
    xx = ((np.arange(w, dtype=np.float64) + 0.5) / w)[None, None, None, :]

    s = _uniform(seed, "shapes", (n, _SHAPES, 6))
    cy, cx = s[..., 0, None, None], s[..., 1, None, None]
    ry, rx = 0.08 + 0.3 * s[..., 2, None, None], 0.08 + 0.3 * s[..., 3, None, None]
    ellipse = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    rect = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    inside = np.where(s[..., 4, None, None] < 0.5, ellipse, rect)  # (n, S, h, w)
    tone = _uniform(seed, "shape-tone", (n, _SHAPES, c))
    for k in range(_SHAPES):  # painter's order over a fixed handful of layers
        img = np.where(inside[:, k, None], tone[:, k, :, None, None], img)

    t = _uniform(seed, "strokes", (n, _STROKES, 5))
    y0, x0 = t[..., 0, None, None], t[..., 1, None, None]
    y1, x1 = t[..., 2, None, None], t[..., 3, None, None]
    width = (1.5 + 2.0 * t[..., 4, None, None]) / max(h, w)
    dy, dx = y1 - y0, x1 - x0
    along = np.clip(((yy - y0) * dy + (xx - x0) * dx) / np.maximum(dy * dy + dx * dx, 1e-9),
                    0.0, 1.0)
    dist2 = (yy - y0 - along * dy) ** 2 + (xx - x0 - along * dx) ** 2
    on_stroke = dist2 <= width * width
    stroke_tone = _uniform(seed, "stroke-tone", (n, _STROKES, c))
    stroke_tone = np.where(stroke_tone < 0.5, 0.0, 1.0)  # strokes are black or white
    for k in range(_STROKES):
        img = np.where(on_stroke[:, k, None], stroke_tone[:, k, :, None, None], img)
    return img


def generate(seed: bytes, params: TriggerParams) -> TriggerSet:
    """The derived set for ``seed``: same seed and params, bit-identical tensors."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise TicketmarkError(f"a trigger seed is {SEED_BYTES} bytes")
    params.validate()
    pixels = _images(seed, params)
    x = (params.lo + pixels * (params.hi - params.lo)).astype(np.float32)
    y = _labels(seed, params.size, params.classes)
    return TriggerSet(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y),
                      torch.ones(params.size, dtype=torch.bool))
