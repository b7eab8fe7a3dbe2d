"""``ticketmark dispute``: two claims over one model; who holds the original?"""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.cli.options import DERIVE_THRESHOLD, ForceOpt, existing_report_file
from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_json


@app.command()
def dispute(
    model: str = typer.Option(..., "--model", help="the disputed model (file or http:// URL)"),
    claim: list[Path] = typer.Option(..., "--claim", help="give exactly two: A then B"),
    reference_a: Path | None = typer.Option(None, help="claimant A's reference ticket"),
    reference_b: Path | None = typer.Option(None, help="claimant B's reference ticket"),
    reveal_a: Path | None = typer.Option(None, help="A's trigger reveal file (trigger claims)"),
    reveal_b: Path | None = typer.Option(None, help="B's trigger reveal file (trigger claims)"),
    token_a: Path | None = typer.Option(None, help="A's RFC 3161 token (default CLAIM.tst)"),
    token_b: Path | None = typer.Option(None, help="B's RFC 3161 token (default CLAIM.tst)"),
    tsa_cert: list[Path] = typer.Option([], "--tsa-cert",
                                        help="TSA / CA certificate you trust (repeatable); "
                                             "without one, time-stamps are not used"),
    threshold: float | None = typer.Option(None, help="p-value threshold of the verifiers"),
    derive_threshold: float = typer.Option(DERIVE_THRESHOLD,
                                           help="p-value below which a model counts as "
                                                "derived from a reference"),
    report: Path | None = typer.Option(None, "--report", help="write dispute.json here"),
    force: bool = ForceOpt,
) -> None:
    """Decide which claimant holds the original; exit 0 when decided, 1 when not."""
    from ticketmark.ownership.derive import fmt_p
    from ticketmark.ownership.dispute import Claimant, decide
    from ticketmark.ownership.timestamp import load_trust_store

    if len(claim) != 2:
        raise TicketmarkError(f"give exactly two --claim options, got {len(claim)}")
    trusted = load_trust_store(tsa_cert) if tsa_cert else None
    claimants = [Claimant(claim[0], reference_a, reveal_a, token_a),
                 Claimant(claim[1], reference_b, reveal_b, token_b)]
    result = decide(model, claimants, threshold, trusted, derive_threshold)
    for name, who, verdict in zip("AB", claimants, result.verdicts, strict=True):
        print(f"claim {name} ({who.claim}): {verdict.status} — {verdict.reason}")
    for name, stand in zip("AB", result.standing, strict=True):
        print(f"  {name} on its own reference: {stand}")
    for k, v in result.derivation.items():
        print(f"  derivation, {k}: {v['status']} (p = {fmt_p(v['log10_p'])})")
    for k, v in result.cross.items():
        print(f"  {k}: {v}")
    for name, t in zip("AB", result.timestamps, strict=True):
        print(f"  time-stamp of {name}: {'VALID' if t['valid'] else 'none'} — {t['reason']}")
    if result.winner is None:
        print(f"UNDECIDED: {result.reason}")
    else:
        print(f"WINNER: claim {'AB'[result.winner]} ({claimants[result.winner].claim}) — "
              f"{result.reason}")
    if report is not None:  # the decision is printed above whatever happens here
        problem = existing_report_file(report, ["dispute.json"], force)
        if problem is not None:
            raise TicketmarkError(f"{problem} (the decision above was not saved)")
        atomic_write_json(report / "dispute.json", result.to_json())
        print(f"  report: {report / 'dispute.json'}")
    raise typer.Exit(0 if result.winner is not None else 1)
