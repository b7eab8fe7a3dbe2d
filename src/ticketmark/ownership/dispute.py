"""Deciding between two claimants of one model.

1. A claim whose signature, commitment or evidence fails on the disputed model is rejected
   with the verifier's reason.
2. If both claims verify on the model (a thief embedded a second signature into a stolen
   copy), the claimants' reference tickets decide: the original owner's reference carries
   only the owner's credential, while the thief's "original" was derived from the owner's
   ticket and so carries the owner's credential as well. The claimant whose credential is
   found in the other's reference, and not the reverse, holds the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.ownership.claims import load_claim
from ticketmark.ownership.verdict import Verdict, VerifyOptions


@dataclass
class Claimant:
    claim: Path
    reference: Path | None = None
    reveal: Path | None = None

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

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner, "reason": self.reason,
                "verdicts": [v.to_json() for v in self.verdicts], "cross": self.cross}


def _verify(suspect: str | Path, who: Claimant, threshold: float | None) -> Verdict:
    from ticketmark.ownership.verify import verify_claim

    return verify_claim(str(suspect), who.claim, VerifyOptions(
        reference=who.reference, reveal=who.reveal, threshold=threshold))


def decide(model: str | Path, claimants: list[Claimant],
           threshold: float | None = None) -> DisputeResult:
    if len(claimants) != 2:
        raise TicketmarkError(f"a dispute takes exactly two claims, got {len(claimants)}")
    names = ["A", "B"]
    verdicts = [_verify(model, c, threshold) for c in claimants]
    holds = [v.owned for v in verdicts]
    if holds == [True, False] or holds == [False, True]:
        w = holds.index(True)
        loser = 1 - w
        return DisputeResult(w, f"only claim {names[w]} verifies on the model; claim "
                                f"{names[loser]} is rejected: {verdicts[loser].reason}",
                             verdicts)
    if not any(holds):
        return DisputeResult(None, "neither claim verifies on the model: "
                                   f"A: {verdicts[0].reason}; B: {verdicts[1].reason}",
                             verdicts)
    if any(c.reference is None for c in claimants):
        return DisputeResult(None, "both claims verify on the model; give both reference "
                                   "tickets (--reference-a, --reference-b) to decide which "
                                   "one is the original", verdicts)
    # Does A's credential appear in B's reference, and B's in A's?
    a_in_b = _verify(claimants[1].reference, claimants[0], threshold)
    b_in_a = _verify(claimants[0].reference, claimants[1], threshold)
    cross = {"A's credential in B's reference": a_in_b.status,
             "B's credential in A's reference": b_in_a.status}
    if a_in_b.owned and not b_in_a.owned:
        return DisputeResult(0, "both claims verify on the model, but B's reference already "
                                "carries A's credential while A's reference does not carry "
                                "B's: B's ticket was derived from A's, so A holds the original",
                             verdicts, cross)
    if b_in_a.owned and not a_in_b.owned:
        return DisputeResult(1, "both claims verify on the model, but A's reference already "
                                "carries B's credential while B's reference does not carry "
                                "A's: A's ticket was derived from B's, so B holds the original",
                             verdicts, cross)
    return DisputeResult(None, "both claims verify and the references do not separate them "
                               f"({'; '.join(f'{k}: {v}' for k, v in cross.items())})",
                         verdicts, cross)
