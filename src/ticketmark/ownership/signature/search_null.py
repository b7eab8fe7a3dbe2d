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


def search_null(weights: dict[str, torch.Tensor], densities: dict[str, float], version: int,
                tag_length: int, codes: int = 24, seed: int = 0) -> SearchNull:
    """Best agreement that searching the suspect's weights reaches for random codes."""
    sample = qr.make_code(random_tags(1, tag_length, seed)[0], version=version)
    n = sample.size
    conns = {}
    for name, w in weights.items():
        if not placement.fits(tuple(w.shape), n):
            continue
        norms = extract.kernel_norms(w)
        density = densities.get(name, float((norms > 0).double().mean()))
        conns[name] = extract.connectivity_from_norms(norms, density)
    maxima = []
    for tag in random_tags(codes, tag_length, seed):
        cands = placement.best_per_layer(conns, [c.modules for c in qr.all_masks(tag)
                                                 if c.version == version] or
                                         [qr.make_code(tag, version=version).modules])
        maxima.append(cands[0].agreement if cands else 0)
    return SearchNull(np.asarray(maxima, dtype=np.float64), n * n, len(conns))
