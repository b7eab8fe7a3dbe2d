"""``ticketmark report``: the run's story as one mailable HTML page plus Markdown."""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.cli.options import ForceOpt, refuse_overwrite


@app.command()
def report(
    run: Path = typer.Option(..., "--run", help="a demo/run directory holding report.json"),
    out: Path | None = typer.Option(None, "--out", help="folder for report.html/.md "
                                                        "(default: the run directory)"),
    force: bool = ForceOpt,
) -> None:
    """Write report.html (self-contained) and report.md for a finished run."""
    from ticketmark.report.page import render_report
    from ticketmark.training.progress import console

    folder = out if out is not None else run
    refuse_overwrite([folder / "report.html", folder / "report.md"], force)
    html_path, md_path = render_report(run, out)
    console.print(f"report: {html_path}\nmarkdown: {md_path}")
