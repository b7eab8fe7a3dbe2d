"""Black-box verification of a trigger claim against a model file or a live endpoint.

Order of checks, each with its own verdict: the claim's signature and parameters (NOT
OWNED if forged), the revealed seed or folder against the commitment (NOT OWNED if it
does not regenerate the committed set), then the suspect's answers on the kept slots and
the binomial test. Anything that stops us from getting trustworthy answers (an endpoint
that times out, returns malformed JSON or the wrong number of labels; a model whose input
shape does not fit) is COULD NOT VERIFY: silence from a suspect is not evidence.

From a model file only the weights are read (``Ticket.build``), never its metadata, which
the suspect's holder controls. ``options.reference``, for this scheme, is an unmarked
reference model file (or a folder of them) on which the null match rate is calibrated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket
from ticketmark.ownership.claims import Claim
from ticketmark.ownership.trigger.client import ClientOptions, EndpointError, query_labels
from ticketmark.ownership.trigger.commitment import commitment, load_seed, secret_hash
from ticketmark.ownership.trigger.folder import folder_hash, load_folder
from ticketmark.ownership.trigger.generate import (
    GENERATOR_VERSION,
    TriggerParams,
    TriggerSet,
    generate,
)
from ticketmark.ownership.trigger.picture import confusion_strip
from ticketmark.ownership.trigger.stats import DEFAULT_THRESHOLD, binomial_p, calibrate_null
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, UNVERIFIABLE, Verdict, VerifyOptions
from ticketmark.training import predict

SCHEME = "trigger"


def is_endpoint(suspect: str) -> bool:
    return suspect.startswith(("http://", "https://"))


def reveal_set(claim: Claim, reveal: Path) -> tuple[TriggerSet, TriggerParams, bool, str]:
    """Regenerate the committed set from what the owner revealed.

    Returns the set, its params, whether it matches the claim's commitment, and the kind.
    A malformed claim or reveal file is a TicketmarkError (the user gave a bad file).
    """
    cp = claim.params
    kind = cp.get("kind")
    if kind not in ("derived", "folder"):
        raise TicketmarkError(f"trigger claim has unknown kind {kind!r}")
    if cp.get("generator") != GENERATOR_VERSION:
        raise TicketmarkError(f"trigger claim needs generator {cp.get('generator')!r}; this is "
                              f"{GENERATOR_VERSION}")
    params = TriggerParams.from_dict(cp.get("trigger"))
    if kind == "derived":
        if reveal.is_dir():
            raise TicketmarkError(f"{reveal} is a folder; this claim needs a seed file")
        seed, excluded = load_seed(reveal)
        trig = generate(seed, params).with_excluded(excluded)
        digest = secret_hash(seed)
    else:
        if not reveal.is_dir():
            raise TicketmarkError(f"this claim uses a folder trigger set: --reveal the folder, "
                                  f"not {reveal}")
        trig, folder_params = load_folder(reveal, params.channels, params.height, params.width,
                                          params.classes, params.lo, params.hi)
        excluded = []
        digest = folder_hash(reveal)
        if folder_params != params:
            return trig, params, False, kind
    ok = commitment(digest, kind, params.to_dict(), excluded) == cp.get("commitment")
    return trig, params, ok, kind


def _model_labels(path: str, x: torch.Tensor, params: TriggerParams) -> np.ndarray:
    """Top-1 labels from a model file, built from its weights alone."""
    ticket = load_ticket(path)
    if (ticket.in_channels, ticket.image_size, ticket.image_size) != params.shape:
        raise EndpointError(f"the suspect takes {ticket.in_channels}x{ticket.image_size}x"
                            f"{ticket.image_size} inputs; the trigger set is "
                            f"{'x'.join(map(str, params.shape))}")
    if ticket.num_classes != params.classes:
        raise EndpointError(f"the suspect has {ticket.num_classes} classes; the claim "
                            f"{params.classes}")
    return predict(ticket.build(), x).argmax(1).numpy()


def suspect_labels(suspect: str, x: torch.Tensor, params: TriggerParams,
                   options: VerifyOptions) -> np.ndarray:
    """Labels from a model file or an endpoint; EndpointError when they cannot be had."""
    if is_endpoint(suspect):
        opts = ClientOptions(batch_size=options.batch_size, timeout=options.timeout,
                             max_queries=options.max_queries, deadline=options.deadline,
                             adapter=options.adapter)
        return query_labels(suspect, x.numpy(), params.classes, opts)
    return _model_labels(suspect, x, params)


def _reference_models(path: Path) -> list[str]:
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.safetensors"))
        if not found:
            raise TicketmarkError(f"no reference models (*.safetensors) in {path}")
        return found
    return [str(path)]


def null_rate(trig: TriggerSet, params: TriggerParams, options: VerifyOptions
              ) -> tuple[float, dict[str, Any]]:
    """1/classes, or calibrated on the unmarked reference models in ``options.reference``."""
    if options.reference is None:
        return 1.0 / params.classes, {"null": "chance (1/classes)"}
    x, y = trig.x[trig.keep], trig.y[trig.keep].numpy()
    matches, totals = [], []
    for ref in _reference_models(Path(options.reference)):
        try:
            pred = _model_labels(ref, x, params)
        except EndpointError as exc:
            raise TicketmarkError(f"reference model {ref}: {exc}") from None
        matches.append(int((pred == y).sum()))
        totals.append(len(y))
    p0 = calibrate_null(matches, totals, params.classes)
    return p0, {"null": f"calibrated on {len(matches)} reference model(s)",
                "reference_matches": matches}


def _verdict(status: str, reason: str, evidence: dict[str, Any], p: float | None = None,
             pictures: list[str] | None = None) -> Verdict:
    return Verdict(SCHEME, status, reason, evidence, p, pictures or [])


def verify_claim(suspect: str, claim: Claim, options: VerifyOptions) -> Verdict:
    """The verdict for ``suspect`` (model file or http(s) URL) against a trigger claim."""
    if options.reveal is None:
        raise TicketmarkError("trigger claims are verified with --reveal SEED_FILE (or the "
                              "trigger folder)")
    threshold = DEFAULT_THRESHOLD if options.threshold is None else float(options.threshold)
    if not 0.0 < threshold < 1.0:
        raise TicketmarkError(f"threshold must be in (0, 1), got {threshold}")
    if not is_endpoint(suspect) and not Path(suspect).exists() and not Path(
            suspect + ".safetensors").exists():
        raise TicketmarkError(f"no suspect model at {suspect}")
    evidence: dict[str, Any] = {"suspect": suspect, "threshold": threshold,
                                "signature_valid": claim.signature_valid()}
    if not evidence["signature_valid"]:
        return _verdict(NOT_OWNED, "the claim's signature is invalid", evidence)

    trig, params, committed, kind = reveal_set(claim, Path(options.reveal))
    evidence |= {"kind": kind, "commitment_valid": committed, "slots": len(trig),
                 "excluded": len(trig) - trig.kept}
    if not committed:
        return _verdict(NOT_OWNED, "the revealed trigger set does not match the claim's "
                                   "commitment", evidence)
    p0, null_info = null_rate(trig, params, options)
    evidence |= null_info | {"null_p": p0}

    x, y = trig.x[trig.keep], trig.y[trig.keep].numpy()
    try:
        pred = suspect_labels(suspect, x, params, options)
    except EndpointError as exc:
        return _verdict(UNVERIFIABLE, f"could not verify: {exc}", evidence)
    if len(pred) != len(y):  # query_labels checks per batch; belt and braces
        return _verdict(UNVERIFIABLE, f"could not verify: got {len(pred)} labels for "
                                      f"{len(y)} inputs", evidence)

    matches = int((pred == y).sum())
    p = binomial_p(matches, len(trig), p0)  # excluded slots count as misses
    evidence |= {"queried": len(y), "matches": matches,
                 "trigger_accuracy": round(100.0 * matches / max(len(y), 1), 2),
                 "p_value": p}
    pictures = []
    if options.report_dir is not None:
        path = Path(options.report_dir) / "trigger_confusion.png"
        confusion_strip(x.numpy(), y, pred, path,
                        f"{matches}/{len(y)} triggers match, p = {p:.3g}")
        pictures.append(str(path))
    if p < threshold:
        reason = f"{matches}/{len(y)} triggers match; p = {p:.3g} < {threshold:g}"
        return _verdict(OWNED, reason, evidence, p, pictures)
    reason = (f"{matches}/{len(y)} triggers match; p = {p:.3g} is not below {threshold:g} "
              f"(chance would give about {p0 * len(trig):.1f})")
    return _verdict(NOT_OWNED, reason, evidence, p, pictures)
