"""``ticketmark timestamp``: trusted time (RFC 3161) for a claim, stored beside it."""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError
from ticketmark.ownership.claims import load_claim
from ticketmark.ownership.timestamp import (
    check_claim_token,
    check_tsa_url,
    load_trust_store,
    timestamp_claim,
    token_path,
)


@app.command()
def timestamp(
    claim: Path = typer.Option(..., "--claim", help="the signed claim to time-stamp"),
    tsa: str | None = typer.Option(None, "--tsa", help="URL of an RFC 3161 time-stamp "
                                                       "authority (omit to check a stored token)"),
    tsa_cert: list[Path] = typer.Option([], "--tsa-cert",
                                        help="trusted TSA / CA certificate (PEM or DER); "
                                             "checks the token against it"),
    timeout: float = typer.Option(30.0, help="seconds to wait for the TSA"),
) -> None:
    """Request a token for CLAIM (written to CLAIM.tst) and/or check it; exit 0 if valid."""
    load_claim(claim)  # bad claim file: one error line before any request
    trusted = load_trust_store(tsa_cert) if tsa_cert else None
    if tsa is None and trusted is None:
        raise TicketmarkError("give --tsa URL to request a token, or --tsa-cert to check one")
    if tsa is not None:
        check_tsa_url(tsa)
        out = timestamp_claim(claim, tsa, timeout)
        print(f"token: {out}")
    if trusted is None:
        print("(not checked: give --tsa-cert to check it against a TSA you trust)")
        return
    check = check_claim_token(claim, trusted)
    print(f"timestamp: {'VALID' if check.valid else 'INVALID'} — {check.reason}")
    if check.time and not check.valid:
        print(f"  token time (untrusted): {check.time}")
    raise typer.Exit(0 if check.valid else 1)


def stamp_after_embed(claim: Path, tsa: str | None, timeout: float = 30.0) -> None:
    """``--tsa`` of embed / trigger embed: stamp the claim just written (files are complete)."""
    if tsa is None:
        return
    try:
        out = timestamp_claim(claim, tsa, timeout)
    except TicketmarkError as exc:
        raise TicketmarkError(f"ticket and claim written, but no time-stamp: {exc}; retry with "
                              f"ticketmark timestamp --claim {claim} --tsa {tsa}") from None
    print(f"token:  {out}")


__all__ = ["stamp_after_embed", "timestamp", "token_path"]
