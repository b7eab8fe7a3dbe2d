"""``ticketmark verify``: check a suspect model against a signed claim.

Only option parsing and printing live here; ``ticketmark.ownership.verify`` chooses the
scheme's verifier (and is what disputes, the demo and the Python API call).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_json
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.ownership.verify import detail_keys, verify_claim

if TYPE_CHECKING:
    from ticketmark.ownership.trigger.adapter import InputAdapter

__all__ = ["verify", "verify_claim"]  # verify_claim: kept importable from here for old code


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TicketmarkError(f"{flag} must be numbers separated by commas, got {text!r}"
                              ) from None


def _adapter(path: Path | None, protocol: str | None, layout: str | None, mean: str | None,
             std: str | None, scale: float | None) -> InputAdapter | None:
    """The adapter file, with any flag given overriding its field; None if nothing given."""
    flags = {"protocol": protocol, "layout": layout,
             "mean": _floats(mean, "--input-mean"), "std": _floats(std, "--input-std"),
             "scale": scale}
    if path is None and all(v is None for v in flags.values()):
        return None
    from ticketmark.ownership.trigger.adapter import InputAdapter

    adapter = InputAdapter.from_file(path) if path is not None else InputAdapter()
    for key, value in flags.items():
        if value is not None:
            setattr(adapter, key, value)
    return adapter.validate()


@app.command()
def verify(
    suspect: str = typer.Option(..., "--suspect", help="suspect model file, or http:// endpoint"),
    claim: Path = typer.Option(..., "--claim", help="the owner's signed claim (JSON)"),
    reference: Path | None = typer.Option(None, help="owner's reference ticket (re-aligns "
                                                     "permuted channels)"),
    reveal: Path | None = typer.Option(None, help="revealed trigger seed file"),
    search: bool = typer.Option(False, "--search", help="signature: search all positions"),
    threshold: float | None = typer.Option(None, help="p-value below which the claim holds"),
    full_evidence: bool = typer.Option(False, "--full-evidence",
                                       help="signature: compute the search null even when "
                                            "the tag decodes (seconds on large models)"),
    report: Path | None = typer.Option(None, "--report", help="folder for JSON + pictures"),
    max_queries: int = typer.Option(10_000, help="endpoint: most inputs to query"),
    timeout: float = typer.Option(10.0, help="endpoint: seconds per request"),
    batch_size: int = typer.Option(50, help="endpoint: inputs per request"),
    protocol: str | None = typer.Option(None, help="endpoint: ticketmark or kserve-v2 "
                                                   "(default: from the URL's path)"),
    adapter: Path | None = typer.Option(None, help="endpoint: JSON/TOML file saying what "
                                                   "the server takes (see README)"),
    input_layout: str | None = typer.Option(None, help="endpoint: NCHW or NHWC"),
    input_mean: str | None = typer.Option(None, help="endpoint: the server's normalisation "
                                                     "mean per channel, e.g. 0.4914,0.4822,0.4465"),
    input_std: str | None = typer.Option(None, help="endpoint: the server's normalisation "
                                                    "std per channel"),
    input_scale: float | None = typer.Option(None, help="endpoint: pixel scale the server "
                                                        "takes (255 for 0..255)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every evidence field"),
) -> None:
    """Print a verdict (exit 0 OWNED, 1 otherwise) with its evidence.

    The suspect is a ticket, a plain .safetensors / .pt state dict, an .onnx file, a folder
    holding one of them, or an http(s) endpoint (ticketmark's /predict or KServe v2).
    """
    options = VerifyOptions(reference=reference, reveal=reveal, search=search,
                            threshold=threshold, full_evidence=full_evidence,
                            report_dir=report, max_queries=max_queries,
                            timeout=timeout, batch_size=batch_size,
                            adapter=_adapter(adapter, protocol, input_layout, input_mean,
                                             input_std, input_scale))
    verdict = verify_claim(suspect, claim, options)
    print(f"{verdict.scheme}: {verdict.status} — {verdict.reason}")
    # Each scheme names the evidence that only breaks down its headline fields.
    details = detail_keys(verdict.scheme)
    hidden = 0
    for key, value in verdict.evidence.items():
        if isinstance(value, dict | list):
            continue
        if key in details and not verbose:
            hidden += 1
            continue
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    if hidden:
        print(f"  ({hidden} more fields with --verbose; all of them in the --report JSON)")
    if report is not None:
        atomic_write_json(report / f"verdict_{verdict.scheme}.json", verdict.to_json())
        print(f"  report: {report / f'verdict_{verdict.scheme}.json'}")
    sys.stdout.flush()
    raise typer.Exit(verdict.exit_code)



