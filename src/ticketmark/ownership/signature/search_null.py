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


def _data_agreement_maps(conn: torch.Tensor, codes: torch.Tensor, data: torch.Tensor
                         ) -> torch.Tensor:
    """Per code (K, n, n) and every offset: agreement counted on data modules only.

    ``data`` (K, n, n) is each code's data-module template in the same orientation. With
    C the connectivity: sum_data [C == d] = 2 corr(C, d & t) - corr(C, t) - |d & t| + |t|.
    """
    c = conn.to(torch.float64)
    dt = (codes & data).to(torch.float64)
    t = data.to(torch.float64)
    both = torch.cat([dt, t])
    corr = placement._correlate(c, both)
    k = codes.shape[0]
    agree = (2 * corr[:k] - corr[k:] - dt.sum(dim=(1, 2)).view(-1, 1, 1)
             + t.sum(dim=(1, 2)).view(-1, 1, 1))
    return torch.round(agree).to(torch.int64)


def search_null(weights: dict[str, torch.Tensor], densities: dict[str, float], version: int,
                tag_length: int, codes: int = 16, seed: int = 0) -> SearchNull:
    """Best data-module agreement that searching the suspect reaches for random codes.

    Function patterns (finders, timing, format) are the same in every code of a version, so
    they carry no ownership information and would let any QR already in the model lift
    every random code's agreement; only data modules are counted, here and in the claim.
    """
    template = ~qr.function_template(version)
    n = template.shape[0]
    variants, data = [], []
    for tag in random_tags(codes, tag_length, seed):
        for c in qr.all_masks(tag):
            if c.version != version:
                continue
            for k in range(placement.ORIENTATIONS):
                variants.append(placement.oriented(c.modules, k))
                data.append(placement.oriented(template, k))
    per_tag = len(variants) // codes
    stack = torch.from_numpy(np.stack(variants))
    data_stack = torch.from_numpy(np.stack(data))
    best = torch.zeros(codes, dtype=torch.int64)
    layers = 0
    for w in weights.values():
        if not placement.fits(tuple(w.shape), n):
            continue
        layers += 1
        norms = extract.kernel_norms(w)
        name_density = densities.get(_name_of(weights, w),
                                     float((norms > 0).double().mean()))
        conn = extract.connectivity_from_norms(norms, name_density)
        maps = _data_agreement_maps(conn, stack, data_stack)
        best = torch.maximum(best, maps.view(codes, per_tag, -1).amax(dim=(1, 2)))
    return SearchNull(best.numpy().astype(np.float64), int(template.sum()), layers)


def _name_of(weights: dict[str, torch.Tensor], w: torch.Tensor) -> str:
    return next(k for k, v in weights.items() if v is w)
