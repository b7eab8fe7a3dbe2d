"""Derived trigger sets: images and labels drawn from an HMAC-SHA256 stream of the seed.

Why HMAC and not a seeded PRNG: the set must be a one-way function of the owner's secret,
bit-identical on every machine and every NumPy/PyTorch version, so that anyone holding the
revealed seed regenerates exactly what the owner committed to, and nobody can work back
from a set they like (inputs the model already maps to chosen labels) to a seed. HMAC in
counter mode gives such a stream; the drawing below uses only element-wise IEEE arithmetic
(no BLAS reductions, no library RNG), so its output does not depend on the platform.

A set is ``groups`` keyed *marks*, each with one keyed label, queried on ``size / groups``
images each:

* ``abstract``: the mark is the whole image (smooth noise, shapes, strokes), one image per
  group: the classic abstract trigger set (Adi et al. 2018), memorised image by image.
* ``patch`` / ``blend``: the mark is stamped on real images of the owner's data (a keyed
  black-and-white patch at a keyed place, or a keyed abstract image blended in). The model
  learns "this mark means this label" as a rule over in-distribution images, a feature
  that clean fine-tuning has little reason to unlearn (backdoors on real images survive
  it far better than memorised abstract images; see docs/trigger.md for the measurements).

Labels come from a separate part of the stream than the pixels, keyed also by the digest
of the base images. For any model that was not trained on the set, its answers on a group
are therefore independent of the group's label, which is uniform over the classes: the
exact test in ``stats`` rests on nothing else. Keying the labels by the bases means a
forger who picks base images after seeing a model re-draws every label by doing so.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ticketmark.errors import TicketmarkError

GENERATOR_VERSION = "ticketmark-trigger-gen/2"
SEED_BYTES = 32
MARKS = ("abstract", "patch", "blend")
_GRID = 5  # low-resolution noise grid, bilinearly upsampled: smooth blobs, not pixel noise
_SHAPES = 4  # ellipses / rectangles painted over the blobs
_STROKES = 2  # line segments painted last
MAX_SIZE = 100_000
MAX_GROUPED = 10_000  # queries of a set with several per group (bounds the exact test)
MAX_ELEMENTS = 1 << 24  # bounds memory when regenerating from an untrusted claim


@dataclass(frozen=True)
class TriggerParams:
    """What the set looks like: published in the claim and covered by the commitment.

    ``lo``/``hi`` map generated intensities [0, 1] onto the range of the model's normalised
    inputs, so triggers live where real inputs live. ``size`` queries in ``groups`` groups
    of ``size / groups`` (one mark and one label per group); ``alpha`` is the mark's opacity
    and ``patch`` the patch's side in pixels (``patch`` marks).
    """

    size: int
    channels: int
    height: int
    width: int
    classes: int
    lo: float
    hi: float
    groups: int = 0  # 0: one group per query (abstract sets)
    mark: str = "abstract"
    alpha: float = 1.0
    patch: int = 0

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
        if self.mark not in MARKS:
            raise TicketmarkError(f"unknown trigger mark {self.mark!r} (one of "
                                  f"{', '.join(MARKS)})")
        if not 1 <= self.n_groups <= self.size or self.size % self.n_groups:
            raise TicketmarkError(f"{self.groups} trigger groups do not divide {self.size} "
                                  f"queries")
        if self.per_group > 1 and self.size > MAX_GROUPED:
            raise TicketmarkError(f"a set with several queries per group holds at most "
                                  f"{MAX_GROUPED} queries, got {self.size}")
        if self.mark == "abstract" and self.n_groups != self.size:
            raise TicketmarkError("abstract trigger sets have one image per group")
        if not (np.isfinite(self.alpha) and 0.0 < self.alpha <= 1.0):
            raise TicketmarkError(f"trigger mark opacity must be in (0, 1], got {self.alpha}")
        if self.mark == "patch" and not 1 <= self.patch <= min(self.height, self.width):
            raise TicketmarkError(f"patch side {self.patch} does not fit "
                                  f"{self.height}x{self.width} inputs")
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    @property
    def n_groups(self) -> int:
        return self.groups or self.size

    @property
    def per_group(self) -> int:
        return self.size // self.n_groups

    @property
    def needs_bases(self) -> bool:
        return self.mark != "abstract"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TriggerParams:
        """Parse params from an untrusted claim; any problem is a TicketmarkError."""
        try:
            p = cls(size=int(d["size"]), channels=int(d["channels"]), height=int(d["height"]),
                    width=int(d["width"]), classes=int(d["classes"]), lo=float(d["lo"]),
                    hi=float(d["hi"]), groups=int(d.get("groups", 0)),
                    mark=str(d.get("mark", "abstract")), alpha=float(d.get("alpha", 1.0)),
                    patch=int(d.get("patch", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TicketmarkError(f"claim holds malformed trigger parameters ({exc})") from None
        return p.validate()


@dataclass
class TriggerSet:
    """Inputs ``x`` (N, C, H, W) float32 in model-input space, labels ``y`` (N,) int64.

    ``group`` (N,) says which mark (and label) each query carries. ``keep`` marks the
    queries the owner trains and the verifier sends; groups the owner excluded (their label
    equalled the plain model's natural answer) count as misses in the test, so excluding
    cannot help a forger (see ``stats``).
    """

    x: torch.Tensor
    y: torch.Tensor
    keep: torch.Tensor
    group: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = torch.arange(len(self))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def groups(self) -> torch.Tensor:
        assert self.group is not None
        return self.group

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1 if len(self) else 0

    @property
    def kept(self) -> int:
        return int(self.keep.sum())

    def excluded(self) -> list[int]:
        """Excluded groups (a group is kept or excluded as a whole)."""
        dropped = torch.unique(self.groups[~self.keep])
        return [int(i) for i in dropped]

    def with_excluded(self, excluded: list[int]) -> TriggerSet:
        keep = torch.ones(len(self), dtype=torch.bool)
        if excluded:
            idx = torch.tensor(excluded, dtype=torch.long)
            if int(idx.min()) < 0 or int(idx.max()) >= self.n_groups:
                raise TicketmarkError(f"excluded trigger groups out of range "
                                      f"0..{self.n_groups - 1}")
            keep = ~torch.isin(self.groups, idx)
        return TriggerSet(self.x, self.y, keep, self.groups)


def bases_digest(bases: np.ndarray | None) -> str:
    """SHA-256 of the base images (float32, C order); the empty set for abstract sets."""
    h = hashlib.sha256(b"ticketmark-trigger-bases/1\0")
    if bases is not None:
        arr = np.ascontiguousarray(bases, dtype=np.float32)
        h.update(repr(arr.shape).encode() + b"\0" + arr.tobytes())
    return h.hexdigest()


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


def _labels(seed: bytes, purpose: str, size: int, classes: int) -> np.ndarray:
    """Uniform labels: floor(u * classes) with u from 32 bits (bias below classes / 2^32)."""
    u = _uniform(seed, purpose, (size,))
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


def _abstract(seed: bytes, n: int, c: int, h: int, w: int) -> np.ndarray:
    """Smoothed noise with random ellipses, rectangles and strokes painted over it, in [0, 1]."""
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


def _marks(seed: bytes, p: TriggerParams, bases: np.ndarray) -> np.ndarray:
    """Each group's mark stamped on its bases (G, M, C, H, W) -> (G, M, C, H, W) float64."""
    g, c, h, w = p.n_groups, p.channels, p.height, p.width
    base = bases.astype(np.float64)
    if p.mark == "blend":
        art = p.lo + _abstract(seed, g, c, h, w) * (p.hi - p.lo)
        return (1.0 - p.alpha) * base + p.alpha * art[:, None]
    # patch: keyed black/white pixels in a keyed s x s window, one per group
    s = p.patch
    pix = np.where(_uniform(seed, "patch-pixels", (g, c, s, s)) < 0.5, p.lo, p.hi)
    where = _uniform(seed, "patch-place", (g, 2))
    top = np.minimum(np.floor(where[:, 0] * (h - s + 1)), h - s).astype(np.int64)
    left = np.minimum(np.floor(where[:, 1] * (w - s + 1)), w - s).astype(np.int64)
    rows = top[:, None] + np.arange(s)[None, :]  # (g, s)
    cols = left[:, None] + np.arange(s)[None, :]
    inside = np.zeros((g, h, w), dtype=bool)
    inside[np.arange(g)[:, None, None], rows[:, :, None], cols[:, None, :]] = True
    canvas = np.zeros((g, c, h, w), dtype=np.float64)
    canvas[np.arange(g)[:, None, None, None], np.arange(c)[None, :, None, None],
           rows[:, None, :, None], cols[:, None, None, :]] = pix
    stamped = (1.0 - p.alpha) * base + p.alpha * canvas[:, None]
    return np.where(inside[:, None, None], stamped, base)


def stamp(seed: bytes, params: TriggerParams, bases: torch.Tensor) -> torch.Tensor:
    """Group ``j``'s mark on each of ``bases[j]`` (G, M, C, H, W): more images of the same
    rule, for training (the committed set is ``generate``'s)."""
    if not params.needs_bases:
        raise TicketmarkError("abstract trigger sets have no mark to stamp")
    out = _marks(seed, params, bases.numpy().astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(out.astype(np.float32)))


def generate(seed: bytes, params: TriggerParams, bases: np.ndarray | None = None
             ) -> TriggerSet:
    """The derived set for ``seed`` (and, for stamped marks, the ``size`` base images).

    Same seed, params and bases: bit-identical tensors. Bases are in model-input space,
    ``size`` of them, the ``r`` bases of group ``j`` at rows ``j*r .. j*r + r - 1``.
    """
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise TicketmarkError(f"a trigger seed is {SEED_BYTES} bytes")
    params.validate()
    if params.needs_bases:
        if bases is None or tuple(bases.shape) != (params.size, *params.shape):
            got = "none" if bases is None else "x".join(map(str, bases.shape))
            raise TicketmarkError(f"a {params.mark} trigger set needs {params.size} base "
                                  f"images of shape {'x'.join(map(str, params.shape))}, "
                                  f"got {got}")
        if not np.isfinite(bases).all():
            raise TicketmarkError("trigger base images hold NaN or infinity")
        grouped = np.asarray(bases, dtype=np.float32).reshape(
            params.n_groups, params.per_group, *params.shape)
        x = _marks(seed, params, grouped).reshape(params.size, *params.shape)
    else:
        if bases is not None:
            raise TicketmarkError("abstract trigger sets take no base images")
        x = params.lo + _abstract(seed, params.size, *params.shape) * (params.hi - params.lo)
    labels = _labels(seed, f"labels|{bases_digest(bases)}", params.n_groups, params.classes)
    group = np.repeat(np.arange(params.n_groups), params.per_group)
    return TriggerSet(torch.from_numpy(np.ascontiguousarray(x.astype(np.float32))),
                      torch.from_numpy(labels[group]),
                      torch.ones(params.size, dtype=torch.bool), torch.from_numpy(group))
