"""A null for claims whose position may have been chosen after seeing the model.

The exact binomial p-value at a claimed position assumes the position was fixed in
advance. A forger is free to search every layer, offset, orientation and mask pattern of
the suspect for the block that happens to look most like *their* code, and real masks are
structured (dead channels, dense rows), so the best block of a random code can agree on
three quarters of its modules: far beyond what a per-position binomial calls chance.

So the verdict also asks: does the claimed agreement beat what that same search reaches for
QR codes nobody embedded? We search the suspect for ``codes`` random tags of the claimed
version (each under its best mask pattern), take each one's best agreement, fit a Gumbel
distribution to those maxima (the law of a maximum), and report the upper tail at the
claimed agreement. An embedded code agrees on nearly every module and sits far out in that
tail; a code found by searching sits inside it.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ticketmark.ownership.signature import extract, placement, qr

EULER_GAMMA = 0.5772156649015329
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass
class SearchNull:
    maxima: np.ndarray  # best agreement of each random code over the whole search
    modules: int
    layers: int

    def log10_sf(self, agreement: int) -> float:
        """log10 P(max agreement of a random code >= ``agreement``), Gumbel fit."""
        mu, sd = float(self.maxima.mean()), float(self.maxima.std(ddof=1))
        beta = max(sd, 0.5) * math.sqrt(6.0) / math.pi
        loc = mu - EULER_GAMMA * beta
        z = (agreement - loc) / beta
        # 1 - exp(-exp(-z)); for large z this is exp(-z) to first order.
        tail = -math.expm1(-math.exp(-z)) if z < 30 else math.exp(-z)
        return math.log10(tail) if tail > 0 else -z / math.log(10)

    def to_json(self, agreement: int) -> dict[str, Any]:
        return {"random_codes": int(len(self.maxima)), "layers_searched": self.layers,
                "random_best_mean": round(float(self.maxima.mean()), 2),
                "random_best_max": int(self.maxima.max()),
                "search_log10_p": round(self.log10_sf(agreement), 3),
                "claimed_agreement": int(agreement)}


def random_tags(count: int, length: int, seed: int | None = None) -> list[str]:
    if seed is None:
        return ["".join(secrets.choice(_ALPHABET) for _ in range(length)) for _ in range(count)]
    rng = np.random.default_rng(seed)
    return ["".join(_ALPHABET[i] for i in rng.integers(0, 32, length)) for _ in range(count)]


def data_agreement(block: np.ndarray, code: np.ndarray, version: int) -> int:
    """Agreeing modules outside the function patterns (both in the code's frame)."""
    data = ~qr.function_template(version)
    return int(((block == code) & data).sum())


# Kernels per FFT batch: bounds memory (a batch of 512x512 spectra is ~70 MB in float32).
_CHUNK = 64


def _null_kernels(tags: list[str], version: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (tag, mask pattern, orientation) as one correlation kernel and a constant.

    With C the connectivity, d a code and t its data-module template (same orientation),
    sum_t [C == d] = corr(C, 2(d & t) - t) + |t| - |d & t|: one kernel with values in
    {-1, 0, 1} per variant, so each variant costs a single FFT correlation.
    """
    template = ~qr.function_template(version)
    kernels, consts = [], []
    for tag in tags:
        for c in qr.all_masks(tag):
            if c.version != version:
                continue
            for k in range(placement.ORIENTATIONS):
                d, t = placement.oriented(c.modules, k), placement.oriented(template, k)
                dt = d & t
                kernels.append(2.0 * dt - t)
                consts.append(float(t.sum() - dt.sum()))
    return torch.from_numpy(np.stack(kernels)).float(), torch.tensor(consts)


def _best_agreement(conn: torch.Tensor, kernels: torch.Tensor, consts: torch.Tensor
                    ) -> torch.Tensor:
    """Each kernel's best data-module agreement over every offset of ``conn``.

    float32 FFTs in batches, each reduced to its maximum at once: the maps themselves
    (kernels x offsets, hundreds of millions of values on a ResNet-18) are never held.
    A float32 rounding error of a fraction of a module can at worst shift one null
    maximum by one module, which does not move the fitted tail measurably.
    """
    h, w = conn.shape
    n = kernels.shape[-1]
    fi = torch.fft.rfft2(conn.float(), s=(h, w))
    best = []
    for chunk in torch.flip(kernels, dims=(1, 2)).split(_CHUNK):
        full = torch.fft.irfft2(fi * torch.fft.rfft2(chunk, s=(h, w)), s=(h, w))
        best.append(full[:, n - 1:, n - 1:].amax(dim=(1, 2)))
    return torch.round(torch.cat(best) + consts).to(torch.int64)


def search_null(weights: dict[str, torch.Tensor], densities: dict[str, float], version: int,
                tag_length: int, codes: int = 16, seed: int = 0) -> SearchNull:
    """Best data-module agreement that searching the suspect reaches for random codes.

    Function patterns (finders, timing, format) are the same in every code of a version, so
    they carry no ownership information and would let any QR already in the model lift
    every random code's agreement; only data modules are counted, here and in the claim.
    """
    kernels, consts = _null_kernels(random_tags(codes, tag_length, seed), version)
    n = kernels.shape[-1]
    best = torch.zeros(codes, dtype=torch.int64)
    layers = 0
    for name, w in weights.items():
        if not placement.fits(tuple(w.shape), n):
            continue
        layers += 1
        norms = extract.kernel_norms(w)
        density = densities.get(name, float((norms > 0).double().mean()))
        conn = extract.connectivity_from_norms(norms, density)
        best = torch.maximum(best, _best_agreement(conn, kernels, consts)
                             .view(codes, -1).amax(dim=1))
    return SearchNull(best.numpy().astype(np.float64),
                      int((~qr.function_template(version)).sum()), layers)
