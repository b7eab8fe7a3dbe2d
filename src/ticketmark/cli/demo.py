"""``ticketmark demo``: the whole story on embedded data (extended by later issues)."""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where the demo writes"),
    fast: bool = typer.Option(False, "--fast", help="tiny setting on digits (under a minute "
                                                    "on 2 idle cores)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    force: bool = typer.Option(False, "--force", help="write over an earlier demo in --out "
                                                      "(its keys and claims are replaced)"),
) -> None:
    """Find a ticket, embed credentials, attack, verify; write OUT/report.html."""
    if out.exists() and not out.is_dir():
        raise TicketmarkError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise TicketmarkError(f"{out} exists and is not empty; pass --force to write over it "
                              "or choose another --out")
    from ticketmark.demo import run_demo

    run_demo(out, fast=fast, progress=not quiet)
