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

import functools
import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import gammaincinv

from ticketmark.ownership.signature import extract, heap, placement, qr

EULER_GAMMA = 0.5772156649015329
CODES = 64  # random codes searched per null
EARLY_CODES = 8  # searched first; the rest only when the claim beats all of them
SD_CONFIDENCE = 0.05  # the Gumbel scale is taken at this upper confidence bound
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass
class SearchNull:
    maxima: np.ndarray  # best agreement of each random code over the whole search
    modules: int
    layers: int

    def _gumbel(self) -> tuple[float, float]:
        """(loc, scale) of the fitted Gumbel, its scale taken at the upper 95% confidence
        bound of the sample's standard deviation.

        The fit's own noise is not small: with 16 maxima and the plain moment fit, a claim
        whose agreement is pure chance was called p < 1e-9 with probability 1.4e-6 (an
        average over null draws, simulated; the null's seed follows the claimed tag, so a
        forger who tries many tags draws many nulls). With ``CODES`` maxima and the bound,
        the same simulation gives 1.2e-9 (``tests/test_search_null.py``). A 99% bound on 32
        maxima gave 6.5e-10 but inflated the scale 1.41x, enough to leave a perfectly read
        code of the tests' small ticket at p 10^-8.4; 64 maxima at 95% inflate it 1.17x.
        """
        n = len(self.maxima)
        if n < 2:
            raise ValueError("a search null needs at least two random codes")
        mu, sd = float(self.maxima.mean()), float(self.maxima.std(ddof=1))
        chi2_low = 2.0 * float(gammaincinv((n - 1) / 2.0, SD_CONFIDENCE))  # chi2 quantile
        beta = max(sd, 0.5) * math.sqrt((n - 1) / chi2_low) * math.sqrt(6.0) / math.pi
        return mu - EULER_GAMMA * beta, beta

    def log10_sf(self, agreement: float) -> float:
        """log10 P(max agreement of a random code >= ``agreement``), Gumbel fit."""
        loc, beta = self._gumbel()
        z = (agreement - loc) / beta
        # 1 - exp(-exp(-z)); for large z this is exp(-z) to first order.
        tail = -math.expm1(-math.exp(-z)) if z < 30 else math.exp(-z)
        return math.log10(tail) if tail > 0 else -z / math.log(10)

    def agreement_at(self, log10_p: float) -> float:
        """The agreement whose tail ``log10_sf`` is ``log10_p`` (what a claim must reach)."""
        loc, beta = self._gumbel()
        p = 10.0 ** log10_p
        return loc - beta * math.log(-math.log1p(-p))

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


# Floats per FFT work buffer (16 MiB): a batch of kernels fills it at the layer's size. Kept
# under glibc's largest mmap threshold (32 MiB) and reused across batches, so a ResNet-18
# null no longer maps and faults in a fresh ~70 MB buffer per 64-kernel batch (that cost
# more system time than the FFTs' own user time). The buffers are per layer on purpose:
# freeing them at the layer's end lets glibc raise its mmap threshold, so the FFTs'
# internal temporaries of the same size come from the heap; one workspace held for the
# whole search kept the threshold low and brought the faults back (39% system time).
_BUFFER_FLOATS = 1 << 22


@functools.lru_cache(maxsize=4)
def _null_kernels(tags: tuple[str, ...], version: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (tag, mask pattern, orientation) as one flipped correlation kernel, a constant.

    With C the connectivity, d a code and t its data-module template (same orientation),
    sum_t [C == d] = corr(C, 2(d & t) - t) + |t| - |d & t|: one kernel with values in
    {-1, 0, 1} per variant, so each variant costs a single FFT correlation. The kernels are
    flipped once here (correlation as convolution) and cached: a verifier's null uses the
    same seeded tags on every call, and building 128 QR codes costs more than a small
    layer's search.
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
    flipped = torch.flip(torch.from_numpy(np.stack(kernels)).float(), dims=(1, 2))
    return flipped, torch.tensor(consts)


def _best_agreement(conn: torch.Tensor, flipped: torch.Tensor, consts: torch.Tensor
                    ) -> torch.Tensor:
    """Each kernel's best data-module agreement over every offset of ``conn``.

    float32 FFTs in batches, each reduced to its maximum at once: the maps themselves
    (kernels x offsets, hundreds of millions of values on a ResNet-18) are never held.
    A float32 rounding error of a fraction of a module can at worst shift one null
    maximum by one module, which does not move the fitted tail measurably. The padded
    kernels, their spectra and the correlation maps live in three buffers allocated once
    per layer and overwritten batch after batch.
    """
    h, w = conn.shape
    count, n = flipped.shape[0], flipped.shape[-1]
    fi = torch.fft.rfft2(conn.float(), s=(h, w))
    batch = max(1, min(count, _BUFFER_FLOATS // (h * w)))
    padded = torch.zeros(batch, h, w)  # only the top-left n x n corner is ever written
    spectra = torch.empty(batch, h, w // 2 + 1, dtype=torch.complex64)
    maps = torch.empty(batch, h, w)
    best = torch.empty(count)
    for lo in range(0, count, batch):
        m = min(batch, count - lo)
        padded[:m, :n, :n] = flipped[lo:lo + m]
        torch.fft.rfft2(padded[:m], out=spectra[:m])
        spectra[:m].mul_(fi)
        torch.fft.irfft2(spectra[:m], s=(h, w), out=maps[:m])
        torch.amax(maps[:m, n - 1:, n - 1:], dim=(1, 2), out=best[lo:lo + m])
    return torch.round(best + consts).to(torch.int64)


def search_null(weights: dict[str, torch.Tensor], densities: dict[str, float], version: int,
                tag_length: int, codes: int = CODES, seed: int = 0,
                stop_at: int | None = None) -> SearchNull:
    """Best data-module agreement that searching the suspect reaches for random codes.

    Function patterns (finders, timing, format) are the same in every code of a version, so
    they carry no ownership information and would let any QR already in the model lift
    every random code's agreement; only data modules are counted, here and in the claim.

    ``stop_at``: the claim's own data agreement. An innocent suspect is the common case,
    and there the first ``EARLY_CODES`` random codes already reach it: the p-value is then
    large whatever the other codes would add, so the null stops (``early``) and costs an
    eighth. The codes are the same seeded list either way, so a claim that beats them gets
    the full null.
    """
    heap.retain_freed_memory()  # FFT workspace reused, not re-faulted (``heap``)
    tags = tuple(random_tags(codes, tag_length, seed))
    chunks = [tags] if stop_at is None else [tags[:EARLY_CODES], tags[EARLY_CODES:]]
    layers = {}
    n = 17 + 4 * version  # the code's side
    for name, w in weights.items():
        if not placement.fits(tuple(w.shape), n):
            continue
        norms = extract.kernel_norms(w)
        density = densities.get(name, float((norms > 0).double().mean()))
        layers[name] = extract.connectivity_from_norms(norms, density)
    maxima: list[np.ndarray] = []
    for chunk in chunks:
        if not chunk:
            continue
        kernels, consts = _null_kernels(chunk, version)
        best = torch.zeros(len(chunk), dtype=torch.int64)
        for conn in layers.values():
            best = torch.maximum(best, _best_agreement(conn, kernels, consts)
                                 .view(len(chunk), -1).amax(dim=1))
        maxima.append(best.numpy().astype(np.float64))
        if stop_at is not None and stop_at <= float(maxima[0].max()):
            break
    return SearchNull(np.concatenate(maxima), int((~qr.function_template(version)).sum()),
                      len(layers))
