"""``ticketmark robustness``: clean, PGD, APGD and corruption accuracy, tickets vs dense."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError
from ticketmark.training.progress import console


def parse_eps(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TicketmarkError(f"--eps takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise TicketmarkError("--eps needs at least one value")
    return values


@app.command()
def robustness(
    ticket: list[Path] = typer.Option(..., "--ticket", help="ticket file or run directory; "
                                                            "repeat for several"),
    dense: list[Path] = typer.Option([], "--dense", help="dense network(s) to compare "
                                                         "with, e.g. RUN/round_0"),
    eps: str = typer.Option("0.1,0.2,0.3", help="L-inf budgets in [0, 1] pixel units, "
                                                "comma-separated (inputs are normalised; "
                                                "eps is divided by the data's std)"),
    steps: int = typer.Option(20, help="PGD steps (step size 2.5 eps / steps)"),
    restarts: int = typer.Option(1, help="PGD random restarts (worst case kept per image)"),
    autoattack: bool = typer.Option(False, help="also APGD-CE + APGD-DLR (AutoAttack's "
                                                "core, via ART); slow on a CPU"),
    corruptions: bool = typer.Option(True, help="noise, blur, contrast, brightness at 5 "
                                                "severities"),
    limit: int | None = typer.Option(None, help="first N test images only"),
    seed: int = typer.Option(0),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
    out: Path | None = typer.Option(None, "--out", help="write robustness.json and "
                                                        "robustness_vs_sparsity.png here"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Measure tickets' robustness side by side with their dense networks."""
    from ticketmark.robustness.evaluate import RobustnessOptions
    from ticketmark.robustness.report import robustness_report, table_rows, write_report

    opts = RobustnessOptions(eps=parse_eps(eps), steps=steps, restarts=restarts,
                             corruptions=corruptions, autoattack=autoattack, limit=limit,
                             seed=seed).validate()
    report = robustness_report(ticket, dense, opts, data_dir)
    if out is not None:
        path, png = write_report(report, out)
        console.print(f"wrote {path} and {png}")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    header, cells = table_rows(report)
    table = Table(title=f"robustness on {report['dataset']} ({report['rows'][0]['images']} "
                        f"test images; eps in [0, 1] pixel units)")
    for col in header:
        table.add_column(col, justify="left" if col in {"role", "model"} else "right")
    for line in cells:
        table.add_row(*line)
    Console().print(table)
