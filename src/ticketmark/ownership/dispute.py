"""Deciding between two claimants of one model: credentials, derivation and trusted time.

A credential shows that a model *carries* a code; codes are public, so it does not show
where the model came from, and a thief can erase the owner's credential before adding his
own. Three kinds of evidence are gathered, then one rule is applied in order.

Evidence (every item is reported in ``dispute.json``):

* **verdicts**: does each claim verify on the disputed model?
* **standing**: does each claim verify on its own reference (the ticket it was made for,
  checked by fingerprint)? A claim that does not even hold there is dismissed.
* **derivation** (``ownership.derive``, weights only, the claimed QR blocks left out since
  codes are public): was the model derived from each claimant's reference, and are the two
  references derived from one another?
* **cross credentials**: does A's credential appear in B's reference, and B's in A's?
* **trusted time** (``ownership.timestamp``): each claim's RFC 3161 token, checked against
  the TSA certificates the user trusts.

Rule:

1. A claimant is *linked* to the model if it has standing and one of:
   the model was derived from its reference (weights); the model carries the claim's
   *secret* marks in its own channel order (a trigger set, or the signature's hidden bits:
   committed, not published, until the reveal, so nobody could plant them); or the hidden
   bits pass once the model is re-aligned to the claimant's reference *and* that claim's
   trusted time-stamp is earlier than the rival's (a re-alignment frame is the claimant's
   choice; trusted time shows it was fixed first). Without a reference, or for a model
   behind an API: if its claim verifies on the model. A public QR code in a model not
   derived from the reference is reported as "carries the code, not derived" and does not
   link (anyone can plant one).
2. Neither linked: undecided. One linked: that claimant wins.
3. Both linked: if one's credential is in the other's reference and not the reverse, the
   credential's owner holds the original (the other reference was made from a ticket that
   already carried it; nobody plants a rival's code into their own ticket).
4. Otherwise, if the references derive from one another (or were not given), one of them
   was made from the other, and the claim with the earlier trusted time wins; a claim with
   a valid token beats one without. No valid token on either side: undecided.
5. Anything else (the model derives from two unrelated references): undecided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.io.suspect import load_suspect_weights
from ticketmark.ownership.claims import Claim, load_claim
from ticketmark.ownership.derive import DEFAULT_THRESHOLD, Derivation, code_blocks, derive
from ticketmark.ownership.reference import load_bound_reference
from ticketmark.ownership.signature import hidden
from ticketmark.ownership.timestamp import TimestampCheck, check_claim_token, token_path
from ticketmark.ownership.verdict import Verdict, VerifyOptions

NAMES = "AB"


@dataclass
class Claimant:
    claim: Path
    reference: Path | None = None
    reveal: Path | None = None
    token: Path | None = None  # RFC 3161 token; default CLAIM.tst beside the claim

    @property
    def label(self) -> str:
        owner = load_claim(self.claim)
        message = owner.body.get("message") or ""
        return f"{self.claim.name}" + (f" ({message})" if message else "")


@dataclass
class DisputeResult:
    winner: int | None  # index into the claimants, None when undecided
    reason: str
    verdicts: list[Verdict] = field(default_factory=list)
    cross: dict[str, str] = field(default_factory=dict)
    derivation: dict[str, dict[str, Any]] = field(default_factory=dict)
    timestamps: list[dict[str, Any]] = field(default_factory=list)
    standing: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # the rule as applied, in order

    def to_json(self) -> dict[str, Any]:
        return {"winner": None if self.winner is None else NAMES[self.winner],
                "winner_index": self.winner, "reason": self.reason, "steps": self.steps,
                "verdicts": [v.to_json() for v in self.verdicts], "standing": self.standing,
                "derivation": self.derivation, "cross": self.cross,
                "timestamps": self.timestamps}


def _verify(suspect: str | Path, who: Claimant, threshold: float | None) -> Verdict:
    from ticketmark.ownership.claims import load_claim
    from ticketmark.ownership.verify import scheme_verifier  # derivation is weighed separately

    claim = load_claim(who.claim)

    return scheme_verifier(claim.scheme).verify_claim(str(suspect), claim, VerifyOptions(
        reference=who.reference, reveal=who.reveal, threshold=threshold))


def _load_reference(who: Claimant, claim: Claim) -> Ticket | None:
    if who.reference is None:
        return None
    return load_bound_reference(who.reference, claim.body, f"claim {who.claim}")


def _timestamp(who: Claimant, trusted: list | None) -> TimestampCheck:
    path = who.token or token_path(who.claim)
    if trusted is None:
        note = "token present but not checked" if path.is_file() else "no token"
        return TimestampCheck(False, f"{note}: no trusted TSA certificate given (--tsa-cert)")
    return check_claim_token(who.claim, trusted, path)


def _is_file(model: str | Path) -> bool:
    return not str(model).startswith(("http://", "https://"))


def decide(model: str | Path, claimants: list[Claimant], threshold: float | None = None,
           trusted: list | None = None,
           derive_threshold: float = DEFAULT_THRESHOLD) -> DisputeResult:
    """Apply the rule above; ``trusted`` are the TSA certificates (``load_trust_store``)."""
    if len(claimants) != 2:
        raise TicketmarkError(f"a dispute takes exactly two claims, got {len(claimants)}")
    claims = [load_claim(c.claim) for c in claimants]
    refs = [_load_reference(c, cl) for c, cl in zip(claimants, claims, strict=True)]
    res = DisputeResult(None, "")
    res.verdicts = [_verify(model, c, threshold) for c in claimants]
    holds = [v.owned for v in res.verdicts]
    times = [_timestamp(c, trusted) for c in claimants]
    res.timestamps = [t.to_json() for t in times]

    # Standing: a claim must hold on the ticket it was made for.
    standing = []
    for i, (who, ref) in enumerate(zip(claimants, refs, strict=True)):
        if ref is None:
            standing.append(True)
            res.standing.append("no reference given")
            continue
        own = res.verdicts[i] if str(who.reference) == str(model) else _verify(
            who.reference, who, threshold)
        standing.append(own.owned)
        res.standing.append(own.status)

    # Derivation of the model from each reference, and between the references.
    model_weights = load_suspect_weights(model) if _is_file(model) else None
    derived: list[Derivation | None] = [None, None]
    for i, ref in enumerate(refs):
        if ref is not None and model_weights is not None:
            derived[i] = derive(model_weights, ref, derive_threshold,
                                code_blocks(claims, ref))
            res.derivation[f"model from {NAMES[i]}'s reference"] = derived[i].to_json()
    related: Derivation | None = None
    if refs[0] is not None and refs[1] is not None:
        related = derive(refs[1].state, refs[0], derive_threshold, code_blocks(claims, refs[0]))
        res.derivation["B's reference from A's reference"] = related.to_json()

    # 1. Links.
    secret = [_secret_marks(v) for v in res.verdicts]
    framed = [_framed_hidden(v) and _first_in_time(times, i) for i, v in
              enumerate(res.verdicts)]
    linked = []
    for i in range(2):
        n = NAMES[i]
        d = derived[i]
        if not standing[i]:
            linked.append(False)
            res.steps.append(f"claim {n} does not verify on its own reference: dismissed")
        elif d is not None and d.derived:
            linked.append(True)
            res.steps.append(f"the model was derived from {n}'s reference (p = {_p(d)})")
        elif secret[i]:
            linked.append(True)
            res.steps.append(f"the model carries {n}'s {secret[i]}, secret until the reveal: "
                             f"nobody without {n}'s marked ticket could have put them there"
                             + (f" (weight derivation alone: p = {_p(d)})" if d else ""))
        elif framed[i]:
            linked.append(True)
            res.steps.append(f"{n}'s hidden bits read in the model re-aligned to {n}'s "
                             f"reference ({_realigned(res.verdicts[i])}); that frame was fixed "
                             f"by {n}'s claim, time-stamped before {NAMES[1 - i]}'s")
        elif d is not None:
            linked.append(False)
            if holds[i]:
                res.steps.append(f"claim {n}: the model carries the code, not derived from "
                                 f"{n}'s reference (p = {_p(d)}): a planted or copied code")
            else:
                res.steps.append(f"claim {n} does not verify on the model and the model was "
                                 f"not derived from {n}'s reference (p = {_p(d)})")
        else:
            linked.append(holds[i])
            res.steps.append(f"claim {n} {'verifies' if holds[i] else 'does not verify'} on "
                             "the model (no derivation: "
                             + ("no reference given)" if refs[i] is None
                                else "the model is behind an API)"))

    # 2. Neither or one.
    if not any(linked):
        return _done(res, None, "neither claimant is linked to the model: "
                               + "; ".join(res.steps))
    if linked.count(True) == 1:
        w = linked.index(True)
        return _done(res, w, f"only {NAMES[w]} is linked to the model: " + "; ".join(res.steps))

    # 3. Cross credentials.
    if refs[0] is not None and refs[1] is not None:
        a_in_b = _verify(claimants[1].reference, claimants[0], threshold)
        b_in_a = _verify(claimants[0].reference, claimants[1], threshold)
        res.cross = {"A's credential in B's reference": a_in_b.status,
                     "B's credential in A's reference": b_in_a.status}
        if a_in_b.owned != b_in_a.owned:
            w = 0 if a_in_b.owned else 1
            o = NAMES[1 - w]
            return _done(res, w, f"both are linked to the model, but {o}'s reference already "
                                 f"carries {NAMES[w]}'s credential while {NAMES[w]}'s "
                                 f"reference does not carry {o}'s: {o}'s ticket was made "
                                 f"from {NAMES[w]}'s, so {NAMES[w]} holds the original")
        res.steps.append("the credentials do not separate them ("
                         + "; ".join(f"{k}: {v}" for k, v in res.cross.items()) + ")")

    # 4. Trusted time, when one reference was made from the other.
    if related is not None and not related.derived:
        return _done(res, None, "the model derives from both references, yet they are not "
                                f"derived from one another (p = {_p(related)}): "
                                + "; ".join(res.steps))
    why = ("the two references derive from one another (p = "
           f"{_p(related)}), so one was made from the other" if related is not None
           else "no references to compare")
    valid = [t.valid for t in times]
    if not any(valid):
        return _done(res, None, f"{why}, and neither claim has a valid trusted time-stamp "
                                f"(A: {times[0].reason}; B: {times[1].reason})")
    if valid.count(True) == 1:
        w = valid.index(True)
        return _done(res, w, f"{why}; only {NAMES[w]}'s claim has a valid trusted time-stamp "
                             f"({times[w].time}; {NAMES[1 - w]}: {times[1 - w].reason})")
    ta, tb = times[0].when, times[1].when
    if ta == tb:
        return _done(res, None, f"{why}, and both claims carry the same trusted time {ta}")
    w = 0 if ta < tb else 1
    return _done(res, w, f"{why}; {NAMES[w]}'s claim was time-stamped first "
                         f"({times[w].time}, {NAMES[1 - w]}'s at {times[1 - w].time}): "
                         f"{NAMES[1 - w]}'s ticket cannot predate the one it was made from")


def _secret_marks(verdict: Verdict) -> str:
    """Which of the claim's secret marks the model carries in its own frame ('' if none):
    a trigger set, or the signature's hidden bits. Their positions and answers were
    committed, not published, until the reveal, so unlike a QR code (public, plantable)
    they show the model came from the claimant's marked ticket."""
    if not verdict.owned:
        return ""
    if verdict.scheme == "trigger":
        return "trigger set"
    lp = verdict.evidence.get("hidden_log10_p")
    if isinstance(lp, float) and lp < math.log10(hidden.THRESHOLD):
        return "hidden signature bits"
    return ""


def _framed_hidden(verdict: Verdict) -> bool:
    """The hidden bits pass the threshold once the model is re-aligned to the claimant's
    reference (at twice the p: two readings). That frame is the claimant's choice, so it
    counts only when trusted time fixed it first (``_first_in_time``)."""
    r = verdict.evidence.get("hidden_realigned")
    if verdict.scheme != "signature" or not isinstance(r, dict):
        return False
    return float(r["log10_p_if_frame_were_fixed"]) + math.log10(2) < \
        math.log10(hidden.THRESHOLD)


def _realigned(verdict: Verdict) -> str:
    r = verdict.evidence.get("hidden_realigned", {})
    return (f"{r.get('agree')}/{r.get('read')} agree, p = "
            f"{10.0 ** (float(r.get('log10_p_if_frame_were_fixed', 0.0)) + math.log10(2)):.3g}")


def _first_in_time(times: list[TimestampCheck], i: int) -> bool:
    """Claim i carries a valid trusted time-stamp and the other claim none earlier."""
    mine, other = times[i], times[1 - i]
    if not mine.valid or mine.when is None:
        return False
    return not other.valid or other.when is None or mine.when < other.when


def _p(d: Derivation | None) -> str:
    from ticketmark.ownership.derive import fmt_p

    return "n/a" if d is None else fmt_p(d.log10_p)


def _done(res: DisputeResult, winner: int | None, reason: str) -> DisputeResult:
    res.winner = winner
    res.reason = reason
    return res
