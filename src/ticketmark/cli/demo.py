"""``ticketmark demo``: the whole story on embedded data (extended by later issues)."""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where the demo writes"),
    fast: bool = typer.Option(False, "--fast", help="tiny setting on digits (under a minute)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Find a ticket on embedded data and show what it looks like."""
    from ticketmark.demo import run_demo

    run_demo(out, fast=fast, progress=not quiet)
