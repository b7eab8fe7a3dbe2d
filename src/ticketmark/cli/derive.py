"""``ticketmark derive``: was a suspect model made from a reference ticket?"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.cli.options import DERIVE_THRESHOLD
from ticketmark.io import atomic_write_json


@app.command("derive")
def derive_cmd(
    suspect: Path = typer.Option(..., "--suspect", help="suspect model: a ticket, a plain "
                                 ".safetensors / .pt state dict, ONNX or a folder"),
    reference: Path = typer.Option(..., "--reference", help="the reference ticket"),
    threshold: float = typer.Option(DERIVE_THRESHOLD, help="p-value below which the suspect "
                                                            "counts as derived"),
    report: Path | None = typer.Option(None, "--report", help="write derive.json here"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every layer"),
) -> None:
    """p-value that SUSPECT was derived from REFERENCE; exit 0 derived, 1 not derived."""
    from ticketmark.io import load_ticket
    from ticketmark.io.suspect import load_suspect_weights
    from ticketmark.ownership.derive import derive, fmt_p

    ref = load_ticket(reference)
    # The suspect's weights only, never its mask or metadata; every format verify reads.
    weights = load_suspect_weights(suspect)
    result = derive(weights, ref, threshold)
    print(f"derivation: {result.status} — {result.reason}")
    rows = sorted(result.layers, key=lambda r: r.log10_p)
    shown = rows if verbose else rows[:5]
    print(f"  {'layer':28s} {'units':>6s} {'cosine':>7s} {'chance':>7s} {'mask':>6s} "
          f"{'chance':>7s} {'p':>9s}")
    for r in shown:
        mask = ("     -       -" if math.isnan(r.mask_agree)
                else f"{r.mask_agree:6.3f} {r.mask_null_agree:7.3f}")
        print(f"  {r.layer:28s} {r.units:6d} {r.weight_cosine:7.3f} {r.weight_null_cosine:7.3f} "
              f"{mask} {fmt_p(r.log10_p):>9s}")
    if len(rows) > len(shown):
        print(f"  ({len(rows) - len(shown)} more layers with --verbose)")
    if report is not None:
        atomic_write_json(report / "derive.json", result.to_json())
        print(f"  report: {report / 'derive.json'}")
    raise typer.Exit(0 if result.derived else 1)
