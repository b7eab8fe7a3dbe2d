"""A claim binds every byte of the reference ticket a verifier may read.

A reference is supplied by the claimant, and the claimant may be a forger: a reference that
only had to match the claim's ``model_fingerprint`` (mask and rewind weights) could carry any
trained weights at all, e.g. the suspect's own weights with channels reordered, and steer
whatever the verifier reads from it (channel alignment, derivation, cross credentials in a
dispute). So a claim made by this version also records ``reference_digest``: SHA-256 over the
fingerprint *and* the trained weights, and a reference is accepted only when it matches.

This does not stop a forger from signing a fresh claim over a reference crafted after seeing
the suspect; that is why no verdict rests on a frame read through a reference
(``signature.verify``) and why disputes weigh references by trusted time
(``ownership.dispute``). It stops the cheaper attack: reusing a claim with other weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket, load_ticket

KEY = "reference_digest"


def reference_digest(ticket: Ticket) -> str:
    """SHA-256 over the ticket's fingerprint and its trained weights (sorted by name)."""
    h = hashlib.sha256(b"ticketmark-reference/1\0")
    h.update(ticket.fingerprint().encode())
    for name in sorted(ticket.state):
        tensor = ticket.state[name].detach().cpu().contiguous()
        h.update(name.encode() + b"\0" + str(tensor.dtype).encode() + b"\0"
                 + str(tuple(tensor.shape)).encode() + b"\0")
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def bind(params: dict[str, Any], ticket: Ticket) -> dict[str, Any]:
    """``params`` with the digest of the ticket this claim is made for."""
    return {**params, KEY: reference_digest(ticket)}


def load_bound_reference(path: str | Path, body: dict[str, Any], claim_name: str = "this claim"
                         ) -> Ticket:
    """The reference ticket at ``path``, refused unless ``body`` (a claim body) binds it."""
    ref = load_ticket(path)
    if ref.fingerprint() != body.get("model_fingerprint"):
        raise TicketmarkError(f"reference {path} is not the ticket {claim_name} was made for "
                              "(fingerprint differs)")
    params = body.get("params")
    want = params.get(KEY) if isinstance(params, dict) else None
    if not isinstance(want, str):
        raise TicketmarkError(f"{claim_name} does not bind its reference's trained weights "
                              "(made by an older ticketmark): re-sign the ticket, or leave "
                              "out the reference")
    if reference_digest(ref) != want:
        raise TicketmarkError(f"reference {path} has other trained weights than the ticket "
                              f"{claim_name} was made for (reference digest differs)")
    return ref
