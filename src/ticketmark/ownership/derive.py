"""Was a suspect model derived from a reference ticket? A p-value from weights alone.

A signature shows that a model *carries* a code (and codes are public: anyone can plant
one); a dispute needs to know whether the model was *made from* someone's ticket. Models
made from a ticket (fine-tuned, pruned, quantized, channel-permuted, re-signed, retrained
from its rewind weights) keep its weights and its mask far beyond what an independently
trained model of the same architecture reaches.

Per layer (every conv and linear weight the two share):

1. **Align channels.** The thief may permute channels; the suspect's output and input
   channels are matched to the reference's on kernel L1 norms (``align_channels``: the
   Hungarian matching of ``signature.extract.align``, read and not changed here, on
   rescaling-invariant balanced norms, refined, with the identity as a second candidate).
2. **Units.** A conv kernel (kh x kw > 1) is one unit; for linear / 1x1 layers a unit is a
   row after rows and columns were alternately scaled to unit norm. Every unit is scaled
   to unit length, so the comparison is invariant to any positive rescaling of output and
   input channels (the function-preserving edit BatchNorm absorbs).
3. **Weights**: the sum over aligned units of the cosine between the suspect's unit and the
   reference's. **Mask**: the number of the reference's kept entries that are also among
   the suspect's strongest (as many as the reference keeps), so a dense or filled copy is
   read the same way as a sparse one, and forged zeros or noise in pruned places do not
   decide it.
4. **Null.** The same statistic with the reference's units paired at random, but only
   among units that keep the same number of entries (strata): this keeps everything the
   alignment can produce between unrelated models (matched densities, shared spatial
   habits of trained kernels) and destroys only what a common origin leaves, the
   unit-by-unit agreement. Its mean and variance are exact (Hoeffding's permutation
   moments, no sampling); the tail is the normal one (a sum over hundreds of units).

Per layer p = 2 x min(p_weights, p_mask) (the mask only for kernels larger than 1x1: for
one-weight kernels, which ones are kept is what the alignment itself optimised). Combined:
the chance that at least half of the L layers reach the median layer's p (a binomial tail,
``_combine``): the alignment makes a few layers of unrelated models look alike, so the
single smallest p would overstate the evidence; a copy keeps nearly all of them. The
suspect is compared with the reference's trained and, when present, rewind weights (x2).
``derived`` iff the combined p is below the threshold. ``benchmarks/eval_derive.py``
measures it against independently trained models (the calibration check) and the attacks.

Credentials are public, so evidence of derivation must come from outside them:
``exclude`` removes the claimed QR blocks (reference coordinates) from the comparison, so
a code planted into an unrelated model does not make it "derived".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import norm

from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.io.suspect import load_suspect_weights
from ticketmark.ownership.claims import Claim
from ticketmark.ownership.reference import load_bound_reference
from ticketmark.ownership.signature import extract
from ticketmark.ownership.signature.extract import align
from ticketmark.ownership.verdict import NOT_OWNED, Verdict, VerifyOptions
from ticketmark.ownership.wiring import reference_wiring, wiring_alignments

DEFAULT_THRESHOLD = 1e-6
LN10 = math.log(10.0)
MAX_STRATA = 12
# The wiring alignment (``ownership.wiring``) is fitted on the weights it is then scored on
# (other layers of the same channel groups, whose features converge in unrelated models
# too), so unrelated models look more alike through it than the permutation null says:
# over 35 independently trained resnet20s its combined p reached 3e-6 (magnitudes alone:
# 0.03). Its log10 p is divided by this factor, measured so that those models' smallest p
# sits where a calibrated p's would (about 1/n); laundered copies read 1e-8000 and beyond,
# so the deflation costs them nothing that matters (benchmarks/eval_derive.py).
WIRING_DEFLATION = 4.0


@dataclass
class LayerDerivation:
    """One layer's evidence: observed statistics, their null moments and p-values."""

    layer: str
    units: int
    weight_cosine: float  # mean cosine of aligned units
    weight_null_cosine: float  # its mean under the null
    weight_z: float
    log10_p_weights: float
    mask_agree: float  # share of the reference's kept entries among the suspect's strongest
    mask_null_agree: float
    mask_z: float
    log10_p_mask: float
    log10_p: float
    channels_moved: int

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v)  # no mask statistic
                    else round(v, 6) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


@dataclass
class Derivation:
    derived: bool
    log10_p: float
    threshold: float
    target: str  # the reference weights the suspect is closest to: "trained" or "rewind"
    layers: list[LayerDerivation] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # layer -> kernels left out

    @property
    def p_value(self) -> float:
        return 10.0 ** self.log10_p

    @property
    def status(self) -> str:
        return "DERIVED" if self.derived else "NOT DERIVED"

    @property
    def reason(self) -> str:
        best = min(self.layers, key=lambda r: r.log10_p) if self.layers else None
        where = ""
        if best is not None:
            where = (f"; strongest layer {best.layer}: weight cosine {best.weight_cosine:.3f} "
                     f"vs {best.weight_null_cosine:.3f} by chance")
            if not math.isnan(best.mask_agree):
                where += (f", mask agreement {best.mask_agree:.3f} vs "
                          f"{best.mask_null_agree:.3f}")
        verdict = "below" if self.derived else "not below"
        return (f"p = {fmt_p(self.log10_p)} {verdict} {self.threshold:g} over "
                f"{len(self.layers)} layers (closest to the reference's {self.target} "
                f"weights){where}")

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "derived": self.derived, "p_value": self.p_value,
                "log10_p": self.log10_p, "threshold": self.threshold, "target": self.target,
                "reason": self.reason, "excluded_kernels": self.excluded,
                "layers": [r.to_json() for r in self.layers]}


def fmt_p(log10_p: float) -> str:
    return f"{10.0 ** log10_p:.3g}" if log10_p > -300 else f"1e{log10_p:.0f}"


def comparable_layers(suspect: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
                      ) -> list[str]:
    """Conv and linear weights present in both with one shape, in the suspect's order."""
    return [k for k, v in suspect.items()
            if k.endswith("weight") and v.dim() in (2, 4) and k in reference
            and tuple(reference[k].shape) == tuple(v.shape)]


def _norms(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().to(torch.float64)
    return w.abs().sum(dim=(2, 3)) if w.dim() == 4 else w.abs()


def _balanced(n: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Sinkhorn-balance a kernel-norm matrix: rows and columns sum to one, so a positive
    rescaling of output or input channels (which BatchNorm absorbs) does not move it."""
    n = n + 1e-9 * max(float(n.max()), 1e-30)
    for _ in range(iterations):
        n = n / n.sum(axis=1, keepdims=True)
        n = n / n.sum(axis=0, keepdims=True)
    return n


def _standardised(rows: np.ndarray) -> np.ndarray:
    c = rows - rows.mean(axis=1, keepdims=True)
    return c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-12)


def _match(suspect_rows: np.ndarray, reference_std: np.ndarray) -> np.ndarray:
    """perm with suspect[perm[j]] ~ reference[j], maximising summed row correlation
    (``reference_std``: the reference rows already ``_standardised``)."""
    return extract.assignment(-(reference_std @ _standardised(suspect_rows).T))


def align_channels(suspect_norms: np.ndarray, reference_norms: np.ndarray,
                   rounds: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Output and input permutations of the suspect onto the reference, from magnitudes.

    A variant of ``signature.extract.align`` for derivation: the kernel-norm matrices are
    Sinkhorn-balanced first (invariant to channel rescaling), candidates are the identity
    (an unpermuted copy whose norms random pruning has scrambled) and ``extract.align``'s
    answer, each also refined by alternating Hungarian matchings on row correlations; the
    candidate whose aligned norms correlate best with the reference's wins. Only weight
    *magnitudes* steer it; the derivation statistics read signs and kernel shapes.
    """
    s, r = _balanced(suspect_norms), _balanced(reference_norms)
    o, i = s.shape
    start = align(torch.from_numpy(s), torch.from_numpy(r))
    # The reference's standardised rows and columns never change: computed once, not in
    # every matching (a verify with a reference runs this for every layer, twice).
    r_rows, r_cols = _standardised(r), _standardised(r.T)
    best: tuple[float, tuple[np.ndarray, np.ndarray]] | None = None
    for po, pi in [(np.arange(o), np.arange(i)), start]:
        refined = (po, pi)
        for _ in range(rounds):
            pi_new = _match(s[refined[0]].T, r_cols)
            po_new = _match(s[:, pi_new], r_rows)
            # A round is a deterministic function of the output permutation it starts
            # from: once it returns that permutation, every later round returns the same
            # pair, so stopping here gives exactly what the remaining rounds would.
            done = np.array_equal(po_new, refined[0])
            refined = (po_new, pi_new)
            if done:
                break
        for cand in ((po, pi), refined):
            score = float(np.sum(_standardised(s[cand[0]][:, cand[1]]) * r_rows))
            if best is None or score > best[0] + 1e-9:
                best = (score, cand)
    assert best is not None
    return best[1]


def _units(w: np.ndarray) -> np.ndarray:
    """(units, length): kernels of a conv; rows of a linear / 1x1 layer after alternately
    normalising rows and columns, so neither output nor input rescaling changes them."""
    if w.ndim == 4 and w.shape[2] * w.shape[3] > 1:
        return w.reshape(w.shape[0] * w.shape[1], -1)
    m = w.reshape(w.shape[0], w.shape[1])
    for _ in range(30):  # alternate L2 row / column scaling: a rescaling-free form
        for axis in (1, 0):
            n = np.linalg.norm(m, axis=axis, keepdims=True)
            m = np.divide(m, n, out=np.zeros_like(m), where=n > 0)
    return m


def _mask_units(kept: np.ndarray) -> np.ndarray:
    """Kept entries (0/1) laid out as ``_units`` lays out the weights."""
    k = kept.astype(np.float64)
    if k.ndim == 4 and k.shape[2] * k.shape[3] > 1:
        return k.reshape(k.shape[0] * k.shape[1], -1)
    return k.reshape(k.shape[0], -1)


def _unit_length(u: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(u, axis=1, keepdims=True)
    return np.divide(u, n, out=np.zeros_like(u), where=n > 0)


def _strata(counts: np.ndarray) -> np.ndarray:
    """Stratum label per unit: its kept-entry count, binned by quantiles when too many."""
    values = np.unique(counts)
    if len(values) <= MAX_STRATA:
        return np.searchsorted(values, counts)
    edges = np.unique(np.quantile(counts, np.linspace(0, 1, MAX_STRATA + 1)[1:-1]))
    return np.searchsorted(edges, counts, side="right")


def permutation_z(s: np.ndarray, r: np.ndarray, strata: np.ndarray) -> tuple[float, float, float]:
    """(observed sum of s_i . r_i, its null mean, z) pairing r at random within strata.

    Hoeffding (1951): for T = sum_i a[i, pi(i)] with pi uniform, E T = sum_ij a_ij / n and
    Var T = sum_ij d_ij^2 / (n - 1), d the doubly centred a. With a_ij = s_i . r_j that is
    n (mean s . mean r) and trace(Sc'Sc Rc'Rc) / (n - 1): no n x n matrix is formed.
    """
    observed = float(np.einsum("ij,ij->", s, r))
    mean = var = 0.0
    for g in np.unique(strata):
        idx = strata == g
        n = int(idx.sum())
        sg, rg = s[idx], r[idx]
        ms, mr = sg.mean(axis=0), rg.mean(axis=0)
        mean += n * float(ms @ mr)
        if n > 1:
            sc, rc = sg - ms, rg - mr
            var += float(np.sum((sc.T @ sc) * (rc.T @ rc))) / (n - 1)
    if var <= 1e-24:
        return observed, mean, 0.0
    return observed, mean, (observed - mean) / math.sqrt(var)


def _log10_sf(z: float) -> float:
    return float(norm.logsf(z)) / LN10


def compare_layer(name: str, suspect_w: torch.Tensor, reference_w: torch.Tensor,
                  exclude: np.ndarray | None = None,
                  perms: tuple[np.ndarray, np.ndarray] | None = None) -> LayerDerivation:
    """One layer's evidence (suspect aligned to the reference first: on magnitudes, or by
    ``perms`` found elsewhere, e.g. through the wiring without this layer)."""
    perm_out, perm_in = perms if perms is not None else align_channels(
        _norms(suspect_w).numpy(), _norms(reference_w).numpy())
    s = suspect_w.detach().to(torch.float64).numpy()[perm_out][:, perm_in]
    r = reference_w.detach().to(torch.float64).numpy()
    moved = int((perm_out != np.arange(len(perm_out))).sum()
                + (perm_in != np.arange(len(perm_in))).sum())
    kept_r = r != 0
    m = int(kept_r.sum())
    # The suspect's strongest m entries: its connectivity at the reference's density.
    flat = np.abs(s).ravel()
    kept_s = np.zeros(flat.shape, dtype=bool)
    if 0 < m < flat.size:
        kept_s[np.argpartition(-flat, m - 1)[:m]] = True
    kept_s = kept_s.reshape(s.shape) & (s != 0)
    su, ru = _units(s), _units(r)
    ks, kr = _mask_units(kept_s), _mask_units(kept_r)
    if exclude is not None and exclude.any():
        keep = ~(exclude.reshape(-1) if len(su) == exclude.size else exclude.any(axis=1))
        su, ru, ks, kr = su[keep], ru[keep], ks[keep], kr[keep]
    strata = _strata(kr.sum(axis=1))
    obs_w, mean_w, z_w = permutation_z(_unit_length(su), _unit_length(ru), strata)
    if 0 < m < kept_r.size and s.ndim == 4 and s.shape[2] * s.shape[3] > 1:
        obs_m, mean_m, z_m = permutation_z(ks, kr, strata)
        total = max(float(kr.sum()), 1.0)
        agree, null_agree = obs_m / total, mean_m / total
    else:  # a dense layer says nothing about masks; in 1x1 / linear layers a kernel is one
        # weight, so which kernels are kept is exactly what the alignment optimised
        agree = null_agree = z_m = float("nan")
    n = max(len(su), 1)
    lp_w = _log10_sf(z_w)
    lp_m = _log10_sf(z_m) if not math.isnan(z_m) else 0.0
    lp = min(0.0, min(lp_w, lp_m) + math.log10(2))
    return LayerDerivation(name, len(su), obs_w / n, mean_w / n, z_w, lp_w, agree, null_agree,
                           z_m, lp_m, lp, moved)


def _log_binom_tail(k: int, n: int, ln_p: float) -> float:
    """ln P(Binomial(n, p) >= k), from ln p (p may be far below float range)."""
    ln_q = math.log1p(-math.exp(ln_p)) if ln_p < -1e-12 else -math.inf
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * ln_p
             + ((n - j) * ln_q if n > j else 0.0) for j in range(k, n + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _combine(rows: list[LayerDerivation]) -> float:
    """log10 p that at least half of the layers are as extreme as the median one.

    A copy made from the reference keeps nearly every layer; between independently trained
    models a few layers always look alike after the alignment (convergent features: the
    matching finds channels that learned the same thing), so the smallest per-layer p
    would overstate the evidence. With k = ceil(L / 2) and p_(k) the k-th smallest
    per-layer p, P(Binomial(L, p_(k)) >= k) is a valid p-value for independent layers
    whatever the few most extreme ones do.
    """
    if not rows:
        return 0.0
    ps = sorted(r.log10_p for r in rows)
    k = (len(ps) + 1) // 2
    return min(0.0, _log_binom_tail(k, len(ps), ps[k - 1] * LN10) / LN10)


def derive(suspect: dict[str, torch.Tensor], reference: Ticket,
           threshold: float = DEFAULT_THRESHOLD,
           exclude: dict[str, np.ndarray] | None = None) -> Derivation:
    """Compare a suspect's weights with a reference ticket (trained and rewind weights)."""
    if not 0.0 < threshold < 1.0:
        raise TicketmarkError(f"derivation threshold must be in (0, 1), got {threshold}")
    targets = {"trained": reference.state}
    if reference.rewind:
        targets["rewind"] = {**reference.state, **reference.rewind}
    names = comparable_layers(suspect, reference.state)
    if not names:
        raise TicketmarkError("the suspect shares no conv or linear layer (same name and "
                              "shape) with the reference: another architecture")
    exclude = exclude or {}
    wiring = reference_wiring(reference.model_name, reference.in_channels,
                              reference.num_classes, reference.image_size)
    results: dict[str, list[LayerDerivation]] = {}
    log10: dict[str, float] = {}
    for target, weights in targets.items():
        rows = [compare_layer(k, suspect[k], weights[k], exclude.get(k)) for k in names]
        combined = _combine(rows)
        wired = wiring_alignments(suspect, weights, wiring)
        if wired:  # the better of the two alignments, at twice its p
            alt = [compare_layer(k, suspect[k], weights[k], exclude.get(k), wired[k])
                   if k in wired else r for k, r in zip(names, rows, strict=True)]
            alt_combined = _combine(alt) / WIRING_DEFLATION
            if alt_combined < combined:
                rows, combined = alt, alt_combined
            combined = min(0.0, combined + math.log10(2))
        results[target], log10[target] = rows, combined
    target = min(log10, key=lambda t: log10[t])
    combined = min(0.0, log10[target] + math.log10(len(targets)))
    excluded = {k: int(v.sum()) for k, v in exclude.items() if k in names}
    return Derivation(combined < math.log10(threshold), combined, threshold, target,
                      results[target], excluded)


def code_blocks(claims: list[Claim], reference: Ticket) -> dict[str, np.ndarray]:
    """(out, in) kernels of every claimed QR block, in reference coordinates: public codes
    are no evidence of derivation, so ``derive`` leaves them out."""
    out: dict[str, np.ndarray] = {}
    for claim in claims:
        p = claim.params
        if claim.scheme != "signature" or not all(k in p for k in ("layer", "row", "col",
                                                                   "size")):
            continue
        w = reference.state.get(str(p["layer"]))
        if w is None or w.dim() != 4:
            continue
        block = out.setdefault(str(p["layer"]), np.zeros(tuple(w.shape[:2]), dtype=bool))
        r, c, n = int(p["row"]), int(p["col"]), int(p["size"])
        block[max(r, 0): r + n, max(c, 0): c + n] = True
    return out


def with_derivation(verdict: Verdict, suspect: str, claim: Claim, options: VerifyOptions
                    ) -> Verdict:
    """A signature verdict with derivation from the claimant's reference beside it.

    A signature shows the suspect carries the code; only derivation shows it was made from
    the claimant's ticket. The code is always read in the suspect's own frame (the
    reference never chooses it: ``signature.verify.Alternatives``), so a code found in a
    model *not* derived from the reference is reported as "carries the code, not derived"
    and the verdict is NOT OWNED: codes are public, anyone can plant one. A model derived
    from the reference that carries the code is OWNED; derivation alone is not (a forger's
    reference may be a copy of the suspect: the statistic is symmetric).
    """
    if options.reference is None or verdict.scheme != "signature" \
            or suspect.startswith(("http://", "https://")):
        return verdict
    ref = load_bound_reference(options.reference, claim.body)
    d = derive(load_suspect_weights(suspect), ref, exclude=code_blocks([claim], ref))
    verdict.evidence |= _derivation_evidence(d)
    if d.derived:
        if verdict.owned:
            verdict.reason += f"; derived from the reference (p = {fmt_p(d.log10_p)})"
        else:
            verdict.reason += (f"; the suspect was derived from the reference "
                               f"(p = {fmt_p(d.log10_p)}) but does not carry the code in its "
                               "own channel order")
        return verdict
    if not verdict.owned:
        verdict.reason += f"; not derived from the reference ({d.reason})"
        return verdict
    verdict.evidence["signature_status"] = verdict.status
    verdict.status = NOT_OWNED
    verdict.reason = (f"carries the code, not derived from the reference (derivation {d.reason})"
                      f": a planted or copied code; signature: {verdict.reason}")
    return verdict


def _derivation_evidence(d: Derivation) -> dict[str, Any]:
    return {"derived": d.status, "log10_p_derivation": round(d.log10_p, 3),
            "derivation": d.to_json()}
