"""Black-box verification of a trigger claim against a model file or a live endpoint.

Order of checks, each with its own verdict: the claim's signature and parameters (NOT
OWNED if forged); the reveal against the *claim's* public key, nonce and commitments (NOT
OWNED if it was made by another key, for another claim, or does not regenerate the
committed set); then the suspect's answers on the kept queries and the exact test of
``stats``. Anything that stops us from getting trustworthy answers (an endpoint that times
out, returns malformed JSON or the wrong number of labels; a model whose input shape does
not fit) is COULD NOT VERIFY: silence from a suspect is not evidence.

From a model file only the weights are read (``Ticket.build``), never its metadata, which
the suspect's holder controls. ``options.reference`` (the claimant's reference ticket) is
not used by this scheme: a black-box verdict needs only the suspect's answers.
``options.null_models`` are models known to be unmarked (trained independently, never the
claimant's own ticket): for folder sets they calibrate the null match rate; for derived
sets, whose null is exact, their own p-values are reported as a check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket
from ticketmark.ownership.claims import Claim
from ticketmark.ownership.trigger.client import ClientOptions, EndpointError, query_answers
from ticketmark.ownership.trigger.commitment import commitment, load_reveal, open_derived
from ticketmark.ownership.trigger.folder import folder_hash, load_folder
from ticketmark.ownership.trigger.generate import (
    GENERATOR_VERSION,
    TriggerParams,
    TriggerSet,
    generate,
)
from ticketmark.ownership.trigger.picture import confusion_strip
from ticketmark.ownership.trigger.stats import (
    DEFAULT_THRESHOLD,
    binomial_p,
    calibrate_null,
    exact_law_is_cheap,
    group_test,
    keyed_test,
    rank_points,
    rank_template,
)
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, UNVERIFIABLE, Verdict, VerifyOptions
from ticketmark.training import predict

SCHEME = "trigger"
DETAIL_KEYS = frozenset({"threshold", "slots", "excluded", "null", "groups", "per_group",
                         "mark", "reference", "reveal_valid", "rank_points_max",
                         "rank_points_chance"})


def is_endpoint(suspect: str) -> bool:
    return suspect.startswith(("http://", "https://"))


class RevealRejected(Exception):
    """The reveal does not open this claim (another key, another claim, another set)."""


def reveal_set(claim: Claim, reveal: Path) -> tuple[TriggerSet, TriggerParams, str]:
    """Regenerate the committed set from what the owner revealed.

    A malformed claim or reveal file is a TicketmarkError (the user gave a bad file); a
    well-formed reveal that does not open this claim is ``RevealRejected`` (a verdict).
    """
    cp = claim.params
    kind = cp.get("kind")
    if kind not in ("derived", "folder"):
        raise TicketmarkError(f"trigger claim has unknown kind {kind!r}")
    if cp.get("generator") != GENERATOR_VERSION:
        raise TicketmarkError(f"trigger claim needs generator {cp.get('generator')!r}; this is "
                              f"{GENERATOR_VERSION} (older claims are not verified: their "
                              f"seeds were not bound to the owner's key)")
    params = TriggerParams.from_dict(cp.get("trigger"))
    if kind == "derived":
        if reveal.is_dir():
            raise TicketmarkError(f"{reveal} is a folder; this claim needs a reveal file")
        revealed = load_reveal(reveal)
        try:
            seed = open_derived(claim, revealed, params)
        except TicketmarkError as exc:
            raise RevealRejected(str(exc)) from None
        trig = generate(seed, params, revealed.bases).with_excluded(revealed.excluded)
        return trig, params, kind
    if not reveal.is_dir():
        raise TicketmarkError(f"this claim uses a folder trigger set: --reveal the folder, "
                              f"not {reveal}")
    trig, folder_params = load_folder(reveal, params.channels, params.height, params.width,
                                      params.classes, params.lo, params.hi)
    expected = commitment(folder_hash(reveal), "folder", params.to_dict(), [], "", "",
                          claim.public_key)
    if folder_params != params or expected != cp.get("commitment"):
        raise RevealRejected("the revealed folder does not match the claim's commitment "
                             "(another folder, or a claim re-signed by another key)")
    return trig, params, kind


def _model_scores(path: str, x: torch.Tensor, params: TriggerParams) -> np.ndarray:
    """Logits (N, classes) from a model file, built from its weights alone."""
    ticket = load_ticket(path)
    if (ticket.in_channels, ticket.image_size, ticket.image_size) != params.shape:
        raise EndpointError(f"the suspect takes {ticket.in_channels}x{ticket.image_size}x"
                            f"{ticket.image_size} inputs; the trigger set is "
                            f"{'x'.join(map(str, params.shape))}")
    if ticket.num_classes != params.classes:
        raise EndpointError(f"the suspect has {ticket.num_classes} classes; the claim "
                            f"{params.classes}")
    scores = predict(ticket.build(), x).double().numpy()
    if not np.isfinite(scores).all():
        raise EndpointError("the suspect's weights give non-finite scores on the set")
    return scores


def suspect_answers(suspect: str, x: torch.Tensor, params: TriggerParams,
                    options: VerifyOptions) -> np.ndarray:
    """Scores (N, classes) from a model file; from an endpoint what it gives.

    EndpointError when they cannot be had.
    """
    if is_endpoint(suspect):
        opts = ClientOptions(batch_size=options.batch_size, timeout=options.timeout,
                             max_queries=options.max_queries, deadline=options.deadline,
                             adapter=options.adapter)
        return query_answers(suspect, x.numpy(), params.classes, opts)
    return _model_scores(suspect, x, params)


def top1(answers: np.ndarray) -> np.ndarray:
    """Top-1 labels of the answers: labels as given, or the argmax of scores."""
    return answers if answers.ndim == 1 else answers.argmax(1)


def _null_models(path: Path) -> list[str]:
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.safetensors"))
        if not found:
            raise TicketmarkError(f"no null models (*.safetensors) in {path}")
        return found
    if not path.exists():
        raise TicketmarkError(f"no null model at {path}")
    return [str(path)]


def _test(trig: TriggerSet, params: TriggerParams, answers: np.ndarray, p0: float | None
          ) -> tuple[int, float, dict[str, Any]]:
    """(matches, p, details) of the suspect's ``answers`` on the kept queries.

    Labels alone (an endpoint): the match test. Scores (a model file) of a derived set:
    also the rank test, which sees a keyed label that fine-tuning pushed from first place
    to second; the verdict takes the smaller p doubled (Bonferroni), a rule fixed before
    any answer is seen. Folder sets keep the match test: a person chose their labels, so
    only a calibrated match rate stands for their null.
    """
    pred = top1(answers)
    y = trig.y[trig.keep].numpy()
    if p0 is not None:  # folder sets: binomial against the (calibrated) rate
        matches = int((pred == y).sum())
        return matches, binomial_p(matches, len(trig), p0), {}  # excluded: misses
    groups = trig.groups[trig.keep].numpy()
    matches, p_top1 = group_test(pred, y, groups, params.n_groups, params.per_group,
                                 params.classes)
    template = rank_template(params.classes)
    if answers.ndim == 1 or not exact_law_is_cheap(params.n_groups, params.per_group,
                                                    template):
        return matches, p_top1, {}
    points = rank_points(answers)
    earned, p_rank = keyed_test(points, y, groups, params.n_groups, params.per_group,
                                template)
    details = {"p_top1": p_top1, "p_rank": p_rank, "rank_points": earned,
               "rank_points_max": int(template.max()) * params.size,
               "rank_points_chance": round(float(template.mean()) * params.size, 1)}
    return matches, min(1.0, 2.0 * min(p_top1, p_rank)), details


def null_check(trig: TriggerSet, params: TriggerParams, kind: str, options: VerifyOptions
               ) -> tuple[float | None, dict[str, Any]]:
    """The folder sets' null rate (None for derived sets) and what the null models said.

    Null models must be known to be unmarked, trained independently of the claimant: a
    claimant's own reference carries the set and would make any suspect look innocent.
    """
    if options.null_models is None:
        if kind == "folder":
            return 1.0 / params.classes, {"null": "chance (1/classes); a person chose the "
                                                  "labels: prefer --null-models"}
        return None, {"null": "exact (labels drawn from the secret the reveal opens, "
                              "independent of any model not trained on them)"}
    x, y = trig.x[trig.keep], trig.y[trig.keep].numpy()
    preds = []
    for ref in _null_models(Path(options.null_models)):
        try:
            preds.append(_model_scores(ref, x, params))
        except EndpointError as exc:
            raise TicketmarkError(f"null model {ref}: {exc}") from None
    if kind == "folder":
        matches = [int((top1(pred) == y).sum()) for pred in preds]
        p0 = calibrate_null(matches, [len(y)] * len(matches), params.classes)
        return p0, {"null": f"calibrated on {len(preds)} null model(s)",
                    "null_matches": matches, "null_p": p0}
    tests = [_test(trig, params, pred, None) for pred in preds]
    return None, {"null": f"exact; checked on {len(preds)} null model(s)",
                  "null_matches": [m for m, _, _ in tests],
                  "null_smallest_p": min(p for _, p, _ in tests)}


def _verdict(status: str, reason: str, evidence: dict[str, Any], p: float | None = None,
             pictures: list[str] | None = None) -> Verdict:
    return Verdict(SCHEME, status, reason, evidence, p, pictures or [])


def verify_claim(suspect: str, claim: Claim, options: VerifyOptions) -> Verdict:
    """The verdict for ``suspect`` (model file or http(s) URL) against a trigger claim."""
    if options.reveal is None:
        raise TicketmarkError("trigger claims are verified with --reveal REVEAL_FILE (or the "
                              "trigger folder)")
    threshold = DEFAULT_THRESHOLD if options.threshold is None else float(options.threshold)
    if not 0.0 < threshold < 1.0:
        raise TicketmarkError(f"threshold must be in (0, 1), got {threshold}")
    if not is_endpoint(suspect) and not Path(suspect).exists() and not Path(
            suspect + ".safetensors").exists():
        raise TicketmarkError(f"no suspect model at {suspect}")
    evidence: dict[str, Any] = {"suspect": suspect, "threshold": threshold,
                                "signature_valid": claim.signature_valid()}
    if options.reference is not None:
        evidence["reference"] = "not used by trigger claims (black-box)"
    if not evidence["signature_valid"]:
        return _verdict(NOT_OWNED, "the claim's signature is invalid", evidence)
    try:
        trig, params, kind = reveal_set(claim, Path(options.reveal))
    except RevealRejected as exc:
        evidence["reveal_valid"] = False
        return _verdict(NOT_OWNED, f"the reveal does not open this claim: {exc}", evidence)
    evidence |= {"reveal_valid": True, "kind": kind, "mark": params.mark,
                 "slots": len(trig), "groups": params.n_groups,
                 "per_group": params.per_group, "excluded": len(trig) - trig.kept}
    p0, null_info = null_check(trig, params, kind, options)
    evidence |= null_info

    x, y = trig.x[trig.keep], trig.y[trig.keep].numpy()
    try:
        answers = suspect_answers(suspect, x, params, options)
    except EndpointError as exc:
        return _verdict(UNVERIFIABLE, f"could not verify: {exc}", evidence)
    pred = top1(answers)
    if len(pred) != len(y):  # query_answers checks per batch; belt and braces
        return _verdict(UNVERIFIABLE, f"could not verify: got {len(pred)} labels for "
                                      f"{len(y)} inputs", evidence)

    matches, p, details = _test(trig, params, answers, p0)
    evidence |= {"queried": len(y), "matches": matches,
                 "trigger_accuracy": round(100.0 * matches / max(len(y), 1), 2),
                 **details, "p_value": p}
    # Every p names the test it comes from (docs/verdicts.md, "The p-value").
    if details:
        source = (f"twice the smaller of the match test's {details['p_top1']:.2g} and "
                  f"the rank test's {details['p_rank']:.2g}")
        test = "2 x the smaller of the match and rank tests"
    elif p0 is not None:
        source = test = f"binomial test against a match rate of {p0:.3g}"
    else:
        source = "exact match test against 1/classes per keyed mark"
        test = "exact match test"
    pictures = []
    if options.report_dir is not None:
        path = Path(options.report_dir) / "trigger_confusion.png"
        confusion_strip(x.numpy(), y, pred, path,
                        f"{matches}/{len(y)} triggers match, p = {p:.3g}\n({source})")
        pictures.append(str(path))
    said = f"{matches}/{len(y)} triggers match"
    if details:
        said += (f", keyed labels earn {details['rank_points']}/"
                 f"{details['rank_points_max']} rank points")
    if p < threshold:
        return _verdict(OWNED, f"{said}; p = {p:.3g} ({test}) < {threshold:g}", evidence, p,
                        pictures)
    chance = f"about {len(y) / params.classes:.1f}"
    if details:
        chance += f" matches and {details['rank_points_chance']:g} points"
    reason = (f"{said}; p = {p:.3g} ({test}) is not below {threshold:g} (chance would give "
              f"{chance})")
    return _verdict(NOT_OWNED, reason, evidence, p, pictures)
