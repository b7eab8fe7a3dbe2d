"""``ticketmark info``: what a ticket file holds, per layer."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ticketmark.cli.app import app


@app.command()
def info(
    path: Path | None = typer.Argument(None, help="ticket file or run directory"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    models: bool = typer.Option(False, "--models", help="list the model registry"),
) -> None:
    """Show a ticket's sparsity per layer, accuracy and metadata."""
    from ticketmark.io import load_ticket
    from ticketmark.models import MODELS

    out = Console()
    if models or path is None:
        out.print("models: " + ", ".join(MODELS))
        return
    ticket = load_ticket(path)
    counts, density = ticket.mask.layer_counts(), ticket.mask.layer_density()
    last = (ticket.meta.get("metrics") or [{}])[-1]
    summary = {
        "model": ticket.model_name, "dataset": ticket.dataset,
        "sparsity": ticket.mask.sparsity(), "unpruned": ticket.mask.count(),
        "prunable": ticket.mask.size(), "test_acc": last.get("test_acc"),
        "fingerprint": ticket.fingerprint(), "rewind_epoch": ticket.meta.get("rewind_epoch"),
        "history": ticket.meta.get("history", []),
        "layers": {n: {"unpruned": counts[n], "density": density[n],
                       "shape": list(ticket.mask[n].shape)} for n in ticket.mask},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{path}: {ticket.model_name} on {ticket.dataset}")
    for col in ("layer", "shape", "unpruned", "density"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for n in ticket.mask:
        table.add_row(n, "x".join(map(str, ticket.mask[n].shape)), str(counts[n]),
                      f"{100 * density[n]:.1f}%")
    out.print(table)
    acc = summary["test_acc"]
    out.print(f"sparsity {100 * ticket.mask.sparsity():.2f}% ({ticket.mask.count()} of "
              f"{ticket.mask.size()} prunable weights kept); test accuracy "
              f"{'n/a' if acc is None else f'{acc:.2f}%'}; rewind epoch "
              f"{summary['rewind_epoch']}; fingerprint {summary['fingerprint'][:16]}")
    for h in summary["history"]:
        out.print(f"history: {h}")
