"""Verify a signature claim against a suspect model, reading only the suspect's weights.

Evidence, all reported:

* the claim: its Ed25519 signature, and that its tag really is the hash of its own public
  key, message and fingerprint (so nobody can copy an owner's tag into a claim signed with
  another key);
* the bit agreement between the block recovered from the suspect (canonical kernel norms,
  invariant to per-channel rescaling, thresholded at the density the owner recorded) and
  the expected code, with its chance
  p-value (``stats``; with ``--search`` multiplied by the number of positions tried);
* a decode of the block by zxing-cpp: raw, else with function patterns restored;
* when the tag does not decode (or with ``full_evidence``), the search-calibrated null:
  what searching this suspect reaches for codes nobody embedded (``search_null``); the
  p-value is the larger of that and the exact one at the position;
* with the owner's reveal (``--reveal``), the hidden bits spread over the whole ticket
  (``hidden``): their agreement and its exact Binomial(K, 1/2) p-value.

Verdict: OWNED iff the claim is valid and (the decoded tag matches, or p < threshold, or
the hidden bits' p < ``hidden.THRESHOLD``). Each part has its own threshold, so the chance
of a false OWNED is at most the sum of the two.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketmark.errors import TicketmarkError
from ticketmark.io.suspect import load_suspect_weights, resolve_layer
from ticketmark.io.untrusted import check_float, check_int, show
from ticketmark.models import build_model
from ticketmark.ownership.claims import Claim
from ticketmark.ownership.reference import load_bound_reference
from ticketmark.ownership.signature import (
    canonical,
    extract,
    hidden,
    permutation,
    placement,
    qr,
    stats,
)
from ticketmark.ownership.signature.search_null import data_agreement, search_null
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, UNVERIFIABLE, Verdict, VerifyOptions

SCHEME = "signature"
DEFAULT_THRESHOLD = 1e-9
REQUIRED = {"tag": str, "tag_fingerprint": str, "qr_version": int, "qr_mask": int,
            "size": int, "layer": str, "row": int, "col": int, "orientation": int,
            "density": float}


# Evidence that restates or breaks down a headline field: ``verify`` prints it with
# --verbose only (the JSON report always has it).
DETAIL_KEYS = frozenset({
    "n_dark", "n_light", "agree_dark", "agree_light", "p_binomial", "log10_p_binomial",
    "p_rowcol", "log10_p_rowcol", "log10_p", "log10_p_uncorrected", "decoded_tag_matches",
    "layer_connectivity_density", "decoded_text", "flip_rate", "log10_p_position",
    "hidden_log10_p", "hidden_agreement",
})


def claim_params(claim: Claim) -> dict[str, Any]:
    """The claim's parameters, type-checked: a malformed claim is bad input (exit 2)."""
    if claim.scheme != SCHEME:
        raise TicketmarkError(f"claim is for scheme {claim.scheme!r}, not {SCHEME!r}")
    params = claim.params
    for key, typ in REQUIRED.items():
        value = params.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) if typ is float \
            else isinstance(value, typ) and not isinstance(value, bool)
        if not ok:
            raise TicketmarkError(f"signature claim lacks a valid {key!r} parameter")
    if params["orientation"] not in range(placement.ORIENTATIONS):
        raise TicketmarkError(f"claim orientation must be 0-3, got {params['orientation']}")
    check_claim_ranges(params)
    return params


def check_claim_ranges(params: dict[str, Any]) -> None:
    """Ranges of the numeric fields and the per-layer densities (a claim may be hostile)."""
    for key, lo, hi in (("qr_version", 1, 40), ("qr_mask", 0, 7), ("size", 21, 177),
                        ("row", 0, 1 << 20), ("col", 0, 1 << 20)):
        check_int(params[key], key, lo, hi, "signature claim")
    check_float(params["density"], "density", 0.0, 1.0, "signature claim")
    densities = params.get("densities", {})
    if not isinstance(densities, dict):
        raise TicketmarkError(f"signature claim: densities must be an object, got "
                              f"{show(densities)}")
    for name, value in densities.items():
        check_float(value, f"density of {show(name)}", 0.0, 1.0, "signature claim")


def claim_status(claim: Claim, params: dict[str, Any]) -> tuple[bool, bool, str | None]:
    """(signature valid, tag bound to key/message/fingerprint, reason if not)."""
    sig = claim.signature_valid()
    bound = params["tag"] == qr.make_tag(claim.public_key, str(claim.body.get("message", "")),
                                         params["tag_fingerprint"])
    if not sig:
        return sig, bound, ("the claim's signature is invalid: the claim was changed after "
                            "signing (message, position, key or tag) or the signature is not "
                            "its key's")
    if not bound:
        return sig, bound, ("the claim's tag is not the hash of its own public key, message "
                            "and fingerprint (a tag copied into another owner's claim)")
    return sig, bound, None


def expected_code(params: dict[str, Any]) -> qr.Code:
    code = qr.make_code(params["tag"], mask=params["qr_mask"], version=params["qr_version"])
    if code.size != params["size"]:
        raise TicketmarkError(f"claim says a {params['size']}x{params['size']} code but "
                              f"version {params['qr_version']} is {code.size}x{code.size}")
    return code


def conv_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every 4-d tensor, whatever its name (the usual ONNX export, ``dynamo=False``, folds
    BatchNorm into the convolutions and names them ``onnx::Conv_203``: a per-channel
    rescaling, which canonical norms remove), and every 2-d one as (O, I, 1, 1)."""
    out = {k: v for k, v in state.items() if v.dim() == 4}
    # Linear layers (an MLP's, a transformer's projections) hold one module per entry, as
    # a 1x1 convolution does; 1-d and other tensors are not layers a code can sit in.
    out |= {k: v.view(*v.shape, 1, 1) for k, v in state.items()
            if v.dim() == 2 and min(v.shape) >= 2 and v.is_floating_point()}
    return out


@dataclass
class Reading:
    """One position read out of a suspect: the block, its statistics and its decode."""

    position: placement.Position
    conn: np.ndarray  # the layer's connectivity (re-aligned if a reference was given)
    extracted: np.ndarray  # block in the code's frame
    bits: stats.Agreement
    pvals: stats.PValues
    decoded: str | None
    how: str
    penalty: float = 0.0  # log10 of the number of readings the best was chosen from

    def evidence(self, tag: str) -> dict[str, Any]:
        return {**self.position.to_json(), **self.bits.to_json(), **self.pvals.to_json(),
                "decode": self.how, "decoded_text": self.decoded,
                "tag_decoded": self.decoded == tag}


def read_at(conn: torch.Tensor, position: placement.Position, code: qr.Code) -> Reading:
    c = conn.numpy()
    extracted = placement.block(c, position, code.size)
    drawn = placement.oriented(code.modules, position.orientation)
    variable = placement.oriented(qr.variable_modules(code.version, code.mask, len(code.text)),
                                  position.orientation)
    pv = stats.p_values(c, drawn, position.row, position.col, variable)
    text, how = qr.decode(extracted, code.modules)
    return Reading(position, c, extracted, stats.agreement(extracted, code.modules), pv,
                   text, how)


def layer_conn(name: str, weight: torch.Tensor, density: float | None,
               reference: dict[str, torch.Tensor] | None,
               block: extract.Block | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Connectivity of one suspect layer, re-aligned to the reference when one is given
    (matched outside the claimed code's ``block``, which must not steer the matching)."""
    info: dict[str, Any] = {}
    if reference is not None:
        if name not in reference or reference[name].shape != weight.shape:
            raise TicketmarkError(f"reference ticket has no layer {name} of shape "
                                  f"{tuple(weight.shape)}")
        norms, info = extract.aligned_norms(weight, reference[name], block)
    else:
        norms = extract.kernel_norms(weight)
    if density is None:  # a layer the owner did not record: every non-zero kernel
        density = float((norms > 0).double().mean())
    return extract.connectivity_from_norms(norms, density), info


def load_reference(path: Path, claim: Claim) -> dict[str, torch.Tensor]:
    """The claimant's reference, refused unless the claim binds its trained weights."""
    return load_bound_reference(path, claim.body).state


def search(weights: dict[str, torch.Tensor], code: qr.Code, densities: dict[str, float]
           ) -> tuple[Reading, dict[str, Any]]:
    """Every layer, offset and orientation of the suspect as it is: the best reading, and
    the search's record."""
    n = code.size
    names = [k for k, w in weights.items() if placement.fits(tuple(w.shape), n)]
    if not names:
        raise TicketmarkError(f"the suspect has no conv or linear layer large enough for a "
                              f"{n}x{n} code")
    conns = {k: layer_conn(k, weights[k], densities.get(k), None)[0] for k in names}
    cands = placement.best_per_layer(conns, [code.modules])
    tested = sum(c.positions_in_layer for c in cands)
    # Rank layers by the cheap binomial tail; the exact row/column null (a 441-step
    # recursion) is computed for the few best and for any layer whose block decodes.
    rows = []
    for c in cands:
        blk = placement.block(conns[c.position.layer], c.position, n)
        bits = stats.agreement(blk, code.modules)
        text, how = qr.decode(blk, code.modules)
        rows.append({"layer": c.position.layer, "agree": bits.agree, "decode": how,
                     "text": text, "position": c.position,
                     "log10_p_binomial": stats.log_binomial_tail(
                         bits, float(conns[c.position.layer].double().mean())) / stats.LN10})
    rows.sort(key=lambda r: r["log10_p_binomial"])
    finalists = rows[:3] + [r for r in rows[3:] if r["text"] == code.text]
    readings = [read_at(conns[r["layer"]], r["position"], code) for r in finalists]
    decoded = [r for r in readings if r.decoded == code.text]
    best = decoded[0] if decoded else min(readings, key=lambda r: r.pvals.log10_p)
    table = [{k: v for k, v in r.items() if k not in {"position", "text"}} for r in rows]
    return best, {"positions_tested": tested, "layers_searched": len(names), "per_layer": table}


def suspect_orders(state: dict[str, torch.Tensor], params: dict[str, Any]
                   ) -> dict[str, Any] | None:
    """Channel matches of the suspect onto the signed ticket (``canonical``), from the
    connectivity recovered at the claim's densities; None when the claim records no
    fingerprints or the suspect is not the claimed architecture."""
    spec = params.get("canonical")
    if not isinstance(spec, dict):
        return None
    claim_features = canonical.from_json(spec.get("features"))
    densities = params.get("densities")
    if claim_features is None or not isinstance(densities, dict):
        return None
    try:
        shape = tuple(int(x) for x in spec["input_shape"])
        with torch.device("meta"):  # only the graph is needed: no memory for weights
            model = build_model(str(spec["model"]), shape[0], int(spec["num_classes"]),
                                shape[1])
        axes = canonical.layer_axes(model)
    except (TicketmarkError, KeyError, TypeError, ValueError, IndexError, RuntimeError):
        return None
    conns = {}
    for name, density in densities.items():
        w = state.get(name)
        if name in axes and w is not None and w.dim() == 4 and isinstance(density, float):
            conns[name] = extract.connectivity_from_norms(extract.kernel_norms(w), density)
    perms = canonical.match(claim_features, canonical.mask_features(conns, axes))
    return {"axes": axes, "perms": perms}


class LazyOrders:
    """The suspect's canonical orders, computed on first use: a probe forward pass costs
    seconds on large models and is only needed when the direct reading falls short."""

    def __init__(self, state: dict[str, torch.Tensor], params: dict[str, Any]) -> None:
        self.state, self.params = state, params
        self._value: dict[str, Any] | None = None
        self._done = False

    def get(self) -> dict[str, Any] | None:
        if not self._done:
            self._value, self._done = suspect_orders(self.state, self.params), True
        return self._value


def reorder(conn: torch.Tensor, name: str, params: dict[str, Any],
            lazy: LazyOrders | None) -> torch.Tensor | None:
    """``conn`` in the release's channel order, or None (no orders, or nothing moves)."""
    orders = lazy.get() if lazy is not None else None
    if orders is None or name not in orders["axes"]:
        return None
    out = canonical.realign(conn, orders["axes"][name], orders["perms"])
    if out is None or torch.equal(out, conn):
        return None
    return out


class Alternatives:
    """A layer's re-aligned reading, for the record only: aligned to ``--reference`` when
    given, else the suspect in the order the claim's channel fingerprints give.

    Both frames come from the claimant, and a claimant may be a forger who built them after
    seeing the suspect: a reference made of the suspect's own weights with channels
    reordered, or fingerprints copied from the channels that fit his code, choose which
    suspect channel lands where. Measured on a fine-tuned copy of a public ticket that the
    forger never touched: his code's hidden bits agreed 985/1024 and the QR block decoded
    after such a re-alignment. So a re-aligned reading is reported (``realigned`` in the
    evidence, and a hint in the reason) but never decides a verdict; a permuted copy is read
    by the verifier's own search (``permutation``), whose null is the same search."""

    def __init__(self, state: dict[str, torch.Tensor], params: dict[str, Any],
                 densities: dict[str, float], reference: dict[str, torch.Tensor] | None,
                 blocks: dict[str, extract.Block] | None = None) -> None:
        self.params, self.densities, self.reference = params, densities, reference
        self.blocks = blocks or {}
        self.lazy = None if reference is not None else LazyOrders(state, params)
        self.source = "reference" if reference is not None else "channel fingerprints"

    def conn(self, name: str, weight: torch.Tensor, direct: torch.Tensor
             ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        if self.reference is not None:
            aligned, info = layer_conn(name, weight, self.densities.get(name), self.reference,
                                       self.blocks.get(name))
            return (None if torch.equal(aligned, direct) else aligned), info
        return reorder(direct, name, self.params, self.lazy), {"canonical_channel_order": True}


@dataclass
class HiddenPart:
    """The hidden bits' share of the verdict (see ``hidden``), read in the suspect's own
    channel order; ``realigned`` is the claimant-frame reading, reported only."""

    owned: bool
    summary: str
    evidence: dict[str, Any]
    log10_p: float = 0.0
    realigned: dict[str, Any] | None = None


def read_hidden(claim: Claim, params: dict[str, Any], weights: dict[str, torch.Tensor],
                densities: dict[str, float], options: VerifyOptions, claim_ok: bool,
                alternatives: Alternatives | None = None) -> HiddenPart:
    """Open the claim's hidden bits with ``--reveal`` and read them out of the suspect."""
    if "hidden" not in params:
        return HiddenPart(False, "the claim has no hidden bits", {"hidden": "none in claim"})
    if options.reveal is None:
        return HiddenPart(False, "hidden bits not checked (give the owner's --reveal)",
                          {"hidden": "not revealed"})
    if not claim_ok:
        return HiddenPart(False, "hidden bits not read (invalid claim)",
                          {"hidden": "claim invalid"})
    try:
        layout, bits = hidden.open_claim(params, claim.public_key,
                                         hidden.load_reveal(options.reveal))
    except TicketmarkError as exc:
        # A reveal that does not open this claim is evidence against it, not bad input:
        # it is what a claim re-signed with a copied commitment gets.
        return HiddenPart(False, f"hidden bits not opened: {exc}", {"hidden": str(exc)})
    conns = {}
    for name, o, i in layout.layers:
        w = weights.get(name)
        if w is not None and tuple(w.shape[:2]) == (o, i):
            conns[name] = layer_conn(name, w, densities.get(name), None)[0]
    reading = hidden.read_bits(conns, bits, layout)
    limit = math.log10(hidden.THRESHOLD)
    ok = reading.read > 0 and reading.log10_p < limit
    realigned = None
    if alternatives is not None and not ok:
        canon = {}
        for name, conn in conns.items():
            other, _ = alternatives.conn(name, weights[name], conn)
            canon[name] = other if other is not None else conn
        if canon:
            second = hidden.read_bits(canon, bits, layout)
            realigned = {"source": alternatives.source, "agree": second.agree,
                         "read": second.read, "log10_p_if_frame_were_fixed": second.log10_p}
    summary = (f"hidden bits: {reading.agree}/{reading.read} agree "
               f"(p = {_fmt(reading.log10_p)}, {'<' if ok else 'not below'} "
               f"{hidden.THRESHOLD:g})")
    evidence = reading.to_json()
    if realigned is not None:
        evidence["hidden_realigned"] = realigned
    return HiddenPart(ok, summary, evidence, reading.log10_p, realigned)


def realigned_reading(alternatives: Alternatives, name: str, weight: torch.Tensor,
                      conn: torch.Tensor, position: placement.Position, code: qr.Code
                      ) -> dict[str, Any] | None:
    """The claimed block read in the claimant's frame: reported, never decisive."""
    other, info = alternatives.conn(name, weight, conn)
    if other is None:
        return None
    second = read_at(other, position, code)
    return {"source": alternatives.source, "agree": second.bits.agree,
            "total": second.bits.total, "tag_decoded": second.decoded == code.text,
            "data_agree": data_agreement(second.extracted, code.modules, code.version),
            "log10_p_if_frame_were_fixed": second.pvals.log10_p, **info}


def claimant_frame_hint(realigned: dict[str, Any] | None, hidden_realigned: dict[str, Any]
                        | None) -> str:
    """Why a reading in the claimant's frame did not count, when it would have looked good."""
    parts = []
    if realigned is not None and (realigned["tag_decoded"] or
                                  realigned["log10_p_if_frame_were_fixed"] < -9):
        parts.append(f"QR {realigned['agree']}/{realigned['total']}"
                     + (" (decoded)" if realigned["tag_decoded"] else ""))
    if hidden_realigned is not None and \
            hidden_realigned["log10_p_if_frame_were_fixed"] < math.log10(hidden.THRESHOLD):
        parts.append(f"hidden bits {hidden_realigned['agree']}/{hidden_realigned['read']}")
    if not parts:
        return ""
    source = (realigned or hidden_realigned or {}).get("source", "reference")
    return (f"; re-aligned to the claim's {source} it reads {', '.join(parts)}, but that frame "
            "is the claimant's choice (a forger can build one that fits any model), so it is "
            "not evidence of ownership: settle it with `ticketmark dispute` and trusted "
            "time-stamps (docs/verdicts.md)")


def read_permuted_block(weights: dict[str, torch.Tensor], densities: dict[str, float],
                        params: dict[str, Any], code: qr.Code, search_all: bool
                        ) -> permutation.PermutationReading | None:
    """The claimed code read with the verifier's own channel search (``permutation``): in
    the claimed layer, or with ``--search`` in every layer of the claimed layer's shape."""
    w = weights.get(params["layer"])
    shape = None if w is None else tuple(w.shape[:2])
    names = [k for k, v in weights.items() if tuple(v.shape[:2]) == shape] if search_all \
        else ([params["layer"]] if w is not None else [])
    names = [k for k in names if placement.fits(tuple(weights[k].shape), code.size)]
    if not names:
        return None
    conns = {k: layer_conn(k, weights[k], densities.get(k) if k == params["layer"] or
                           k in densities else None, None)[0].numpy() for k in names}
    modules = placement.oriented(code.modules, params["orientation"])
    data = placement.oriented(~qr.function_template(code.version), params["orientation"])
    start = None if search_all else (int(params["row"]), int(params["col"]))
    return permutation.read_permuted(conns, modules, data, code.version, code.text, start)


def verify_claim(suspect: str, claim: Claim, options: VerifyOptions) -> Verdict:
    """Python entry point of ``ticketmark verify`` for signature claims."""
    params = claim_params(claim)
    threshold = DEFAULT_THRESHOLD if options.threshold is None else float(options.threshold)
    if not 0.0 < threshold < 1.0:
        raise TicketmarkError(f"--threshold must be in (0, 1), got {threshold}")
    code = expected_code(params)
    sig_ok, tag_ok, bad_claim = claim_status(claim, params)
    # Weights only, never mask or meta; a ticket, a plain state dict (.safetensors, .pt),
    # ONNX or a module (``io.suspect``), with a shared key prefix already dropped.
    state = load_suspect_weights(suspect)
    weights = conv_weights(state)
    claimed = resolve_layer(weights, params["layer"])
    if claimed is not None and claimed != params["layer"]:  # e.g. keys renamed by suffix
        weights[params["layer"]] = weights[claimed]
    reference = load_reference(options.reference, claim) if options.reference else None
    densities = {str(k): float(v) for k, v in dict(params.get("densities", {})).items()}
    densities[params["layer"]] = float(params["density"])
    # The claimed square, in the reference's frame: alignment to the reference is matched
    # outside it (``extract.align``).
    blocks = {params["layer"]: (int(params["row"]), int(params["col"]), code.size)}
    alternatives = Alternatives(state, params, densities, reference, blocks)

    evidence: dict[str, Any] = {"mode": "search" if options.search else "claimed position",
                                "signature_valid": sig_ok, "tag_bound_to_claim": tag_ok,
                                "tag": params["tag"], "threshold": threshold}
    realigned: dict[str, Any] | None = None
    if options.search:
        # Every layer, offset and orientation of the suspect as it is: a frame the
        # claimant supplies is not searched (``Alternatives``).
        reading, record = search(weights, code, densities)
        log10_p = min(0.0, reading.pvals.log10_p + math.log10(record["positions_tested"]))
        evidence |= reading.evidence(code.text)
        evidence |= {"log10_p_uncorrected": reading.pvals.log10_p, "log10_p": log10_p,
                     "p_value": 10.0 ** log10_p, "search": record}
    else:
        name = params["layer"]
        pos = placement.Position(name, params["row"], params["col"], params["orientation"])
        w = weights.get(name)
        if w is None or not placement.fits(tuple(w.shape), code.size) \
                or pos.row + code.size > w.shape[0] or pos.col + code.size > w.shape[1]:
            if bad_claim is not None:  # a forged claim is rejected whatever it points at
                return Verdict(SCHEME, NOT_OWNED, bad_claim, evidence)
            reason = (f"the suspect has no layer {name} large enough for the claimed block "
                      "(another architecture? if layers were renamed, try --search)")
            return Verdict(SCHEME, UNVERIFIABLE, reason, evidence)
        conn, _ = layer_conn(name, w, densities[name], None)
        reading = read_at(conn, pos, code)
        if reading.decoded != code.text and bad_claim is None:
            realigned = realigned_reading(alternatives, name, w, conn, pos, code)
        evidence |= reading.evidence(code.text)
        log10_p = min(0.0, reading.pvals.log10_p)
    if realigned is not None:
        evidence["realigned"] = realigned
    tag_decoded = reading.decoded == code.text
    evidence["decoded_tag_matches"] = tag_decoded
    log10_p_position = log10_p
    evidence["log10_p_position"] = log10_p_position
    agree = f"{reading.bits.agree}/{reading.bits.total} modules agree"
    hidden_part = read_hidden(claim, params, weights, densities, options,
                              bad_claim is None, alternatives)
    evidence |= hidden_part.evidence
    decided_by = ""  # what made the verdict OWNED: "tag", "qr", "hidden" or "permutation"
    if bad_claim is not None:
        evidence["search_null"] = {"skipped": "the claim itself is invalid"}
        status, reason = NOT_OWNED, bad_claim
    elif tag_decoded and not options.full_evidence:
        # A decoded tag settles it: landing within QR error correction of one given
        # 7-byte codeword by chance is astronomically unlikely even over every position,
        # so the costly null (below) would only confirm it. --full-evidence computes it.
        evidence["search_null"] = {"skipped": "the claimed tag decoded"}
        status, decided_by = OWNED, "tag"
        reason = (f"valid claim; tag decoded ({reading.how}); {agree} "
                  f"(p = {_fmt(log10_p)} at that position)")
    elif hidden_part.owned and not options.full_evidence:
        evidence["search_null"] = {"skipped": "the hidden bits decided"}
        status, decided_by = OWNED, "hidden"
        reason = f"valid claim; {hidden_part.summary}; QR block: {agree}, tag not decoded"
    else:
        # The position may have been chosen after seeing the model: the agreement must also
        # beat what searching this suspect reaches for codes nobody embedded (search_null).
        data_agree = data_agreement(reading.extracted, code.modules, code.version)
        null = search_null(weights, densities, code.version, len(code.text),
                           seed=int(hashlib.sha256(code.text.encode()).hexdigest()[:8], 16),
                           stop_at=None if options.full_evidence else data_agree)
        evidence["search_null"] = null.to_json(data_agree)
        log10_p = max(log10_p, null.log10_sf(data_agree))
        significant = log10_p < math.log10(threshold)
        searched = (f"{data_agree}/{null.modules} data modules agree, random codes searched "
                    f"over the suspect reach {null.maxima.mean():.0f}")
        if tag_decoded or significant:
            status, decided_by = OWNED, "tag" if tag_decoded else "qr"
            reason = (f"valid claim; {agree} (p = {_fmt(log10_p)} < {threshold:g}; {searched})"
                      if significant else
                      f"valid claim; p = {_fmt(log10_p)} is above {threshold:g}")
            if tag_decoded:
                reason += f"; tag decoded ({reading.how})"
        elif hidden_part.owned:
            status, decided_by = OWNED, "hidden"
            reason = (f"valid claim; {hidden_part.summary}; QR block: {agree}, "
                      f"p = {_fmt(log10_p)} ({searched})")
        else:
            status = NOT_OWNED
            reason = (f"{agree}, p = {_fmt(log10_p)} is not below {threshold:g} ({searched}), "
                      f"and the tag was not decoded; {hidden_part.summary}")
            permuted = read_permuted_block(weights, densities, params, code, options.search)
            if permuted is not None:
                evidence["permutation"] = permuted.to_json()
                frame = permuted.frame
                if permuted.log10_p < math.log10(threshold):
                    status, decided_by = OWNED, "permutation"
                    log10_p = permuted.log10_p
                    reason = (f"valid claim; with channels re-ordered by the verifier's own "
                              f"search (no claimant frame), {frame.data_agree}/"
                              f"{permuted.null.modules if permuted.null else '?'} data modules "
                              f"agree in {permuted.layer} (p = {_fmt(permuted.log10_p)} against "
                              "the same search for random codes)")
                else:
                    reason += (f"; the verifier's own channel search reaches "
                               f"{frame.data_agree} data modules (p = "
                               f"{_fmt(permuted.log10_p)}, the same search for random codes "
                               "as null)")
    if status == NOT_OWNED and bad_claim is None:
        reason += claimant_frame_hint(realigned, hidden_part.realigned)
    # No verdict rests on a frame the claimant supplied (``Alternatives``).
    evidence["frame_from_claimant"] = False
    evidence["decided_by"] = decided_by or None
    # p_value is the verdict's; the chance at the position alone stays as p_position.
    evidence["p_position"] = 10.0 ** log10_p_position
    evidence["log10_p"] = log10_p
    evidence["p_value"] = 10.0 ** log10_p
    pictures = []
    if options.report_dir is not None:
        from ticketmark.ownership.signature.figure import save_signature_figure

        path = Path(options.report_dir) / "signature.png"
        save_signature_figure(path, reading.conn, reading.position, code.size,
                              reading.extracted, code.modules, reading.how)
        pictures.append(str(path))
    verdict_p = 10.0 ** log10_p
    if status == OWNED and hidden_part.owned and not tag_decoded \
            and log10_p >= math.log10(threshold):
        verdict_p = 10.0 ** hidden_part.log10_p
    return Verdict(SCHEME, status, reason, evidence, verdict_p, pictures)


def _fmt(log10_p: float) -> str:
    if log10_p > -300:
        return f"{10.0 ** log10_p:.3g}"
    return f"1e{log10_p:.0f}"
