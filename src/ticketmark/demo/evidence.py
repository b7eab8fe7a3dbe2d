"""Verifying one stolen copy the way an owner would: file for white-box, HTTP for black-box."""

from __future__ import annotations

from pathlib import Path

from ticketmark.io import load_ticket
from ticketmark.ownership.lock.keyfile import LockKey
from ticketmark.ownership.verdict import Verdict, VerifyOptions
from ticketmark.serving.server import make_server, serve_in_thread


def verify_signature(suspect: Path, claim: Path, reference: Path,
                     report_dir: Path | None = None) -> Verdict:
    from ticketmark.ownership.verify import verify_claim

    # The owner's reveal of the hidden bits sits beside the claim (the story writes it).
    reveal = Path(claim).with_name("signature.reveal.json")
    return verify_claim(str(suspect), claim, VerifyOptions(
        reference=reference, reveal=reveal if reveal.is_file() else None,
        report_dir=report_dir))


def verify_trigger_over_http(suspect: Path, claim: Path, seed: Path,
                             report_dir: Path | None = None) -> Verdict:
    """Serve the suspect on 127.0.0.1 (a free port) and verify through the endpoint."""
    from ticketmark.ownership.verify import verify_claim

    ticket = load_ticket(suspect)
    server = make_server(ticket.build().eval(),
                         (ticket.in_channels, ticket.image_size, ticket.image_size),
                         ticket.num_classes, port=0, quiet=True)
    serve_in_thread(server)
    try:
        return verify_claim(server.url, claim, VerifyOptions(reveal=seed, report_dir=report_dir))
    finally:
        server.shutdown()
        server.server_close()


def verify_both(suspect: Path, sig_claim: Path, trig_claim: Path, reference: Path, seed: Path,
                report_dir: Path | None = None) -> tuple[Verdict, Verdict]:
    return (verify_signature(suspect, sig_claim, reference, report_dir),
            verify_trigger_over_http(suspect, trig_claim, seed, report_dir))


def lock_status(suspect: Path, key: LockKey) -> str:
    """Whether the suspect holds the owner's key weights (it should not: they were cut).

    A key weight counts as present when the suspect's weight at that position keeps at least
    half of the original magnitude with the same sign.
    """
    state = load_ticket(suspect).state
    present = total = 0
    for name, idx in key.removed.items():
        if idx.numel() == 0:
            continue
        original = key.removed_values[name].flatten().float()
        have = state[name].flatten()[idx].float()
        present += int(((have * original) >= 0.5 * original.square()).sum())
        total += idx.numel()
    share = 100.0 * present / max(total, 1)
    return f"{'locked' if share < 50 else 'UNLOCKED'} ({share:.0f}% of key present)"


__all__ = ["lock_status", "verify_both", "verify_signature",
           "verify_trigger_over_http"]
