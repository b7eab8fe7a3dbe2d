"""``ticketmark dispute``: two claims over one model; who holds the original?"""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.cli.options import ForceOpt, existing_report_file
from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_json


@app.command()
def dispute(
    model: str = typer.Option(..., "--model", help="the disputed model (file or http:// URL)"),
    claim: list[Path] = typer.Option(..., "--claim", help="give exactly two: A then B"),
    reference_a: Path | None = typer.Option(None, help="claimant A's reference ticket"),
    reference_b: Path | None = typer.Option(None, help="claimant B's reference ticket"),
    reveal_a: Path | None = typer.Option(None, help="A's revealed trigger seed (trigger claims)"),
    reveal_b: Path | None = typer.Option(None, help="B's revealed trigger seed (trigger claims)"),
    threshold: float | None = typer.Option(None, help="p-value threshold of the verifiers"),
    report: Path | None = typer.Option(None, "--report", help="folder to write dispute.json "
                                                             "into"),
    force: bool = ForceOpt,
) -> None:
    """Decide which claimant holds the original; exit 0 when decided, 1 when not."""
    from ticketmark.ownership.dispute import Claimant, decide

    if len(claim) != 2:
        raise TicketmarkError(f"give exactly two --claim options, got {len(claim)}")
    claimants = [Claimant(claim[0], reference_a, reveal_a), Claimant(claim[1], reference_b,
                                                                     reveal_b)]
    result = decide(model, claimants, threshold)
    for name, who, verdict in zip("AB", claimants, result.verdicts, strict=True):
        print(f"claim {name} ({who.claim}): {verdict.status} — {verdict.reason}")
    for k, v in result.cross.items():
        print(f"  {k}: {v}")
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
    raise typer.Exit(0 if result.winner is not None else 1)
