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
from ticketmark.cli.options import existing_report_file
from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_json
from ticketmark.ownership.claims import load_claim
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.ownership.verify import detail_keys, verify_claim

if TYPE_CHECKING:
    from ticketmark.ownership.trigger.adapter import InputAdapter

__all__ = ["verify", "verify_claim"]  # verify_claim: kept importable from here for old code
# What each scheme writes into --report (the verifier names its pictures; keep in step).
REPORT_FILES = {
    "signature": ["verdict_signature.json", "signature.png"],
    "trigger": ["verdict_trigger.json", "trigger_confusion.png"],
}
# The schemes' DEFAULT_THRESHOLD, spelled out so --help need not import the verifiers
# (tests/test_cli_outputs.py checks that they agree). docs/verdicts.md says why they differ.
THRESHOLD_HELP = ("p-value below which the claim holds (default: 1e-9 for a signature, "
                  "1e-6 for a trigger set; see docs/verdicts.md)")


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TicketmarkError(f"{flag} must be numbers separated by commas, got {text!r}"
                              ) from None


def _adapter(path: Path | None, protocol: str | None, layout: str | None, mean: str | None,
             std: str | None, scale: float | None, input_name: str | None = None,
             output: str | None = None, datatype: str | None = None) -> InputAdapter | None:
    """The adapter file, with any flag given overriding its field; None if nothing given."""
    flags = {"protocol": protocol, "layout": layout,
             "mean": _floats(mean, "--input-mean"), "std": _floats(std, "--input-std"),
             "scale": scale, "input_name": input_name, "output": output,
             "datatype": datatype.upper() if datatype is not None else None}
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
    reference: Path | None = typer.Option(None, help="the claimant's reference ticket (the one "
                                                     "the claim was made for; signature: "
                                                     "re-aligns permuted channels)"),
    reveal: Path | None = typer.Option(None, help="the owner's reveal: trigger reveal file "
                                                  "(or folder), or signature reveal (opens "
                                                  "the hidden bits)"),
    null_models: Path | None = typer.Option(None, help="trigger: models known to be unmarked, "
                                                       "trained independently (file or "
                                                       "folder)"),
    search: bool = typer.Option(False, "--search", help="signature: search all positions"),
    threshold: float | None = typer.Option(None, help=THRESHOLD_HELP),
    full_evidence: bool = typer.Option(False, "--full-evidence",
                                       help="signature: compute the search null even when "
                                            "the tag decodes (seconds on large models)"),
    report: Path | None = typer.Option(None, "--report", help="folder for JSON + pictures "
                                                             "(existing ones need --force)"),
    max_queries: int = typer.Option(10_000, help="endpoint: most inputs to query"),
    timeout: float = typer.Option(10.0, help="endpoint: seconds per connect, send or read"),
    deadline: float = typer.Option(300.0, help="endpoint: seconds for all queries together "
                                               "(then COULD NOT VERIFY)"),
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
    input_name: str | None = typer.Option(None, "--input-name",
                                          help="endpoint (KServe v2): the input tensor's "
                                               "name (default \"input\")"),
    output: str | None = typer.Option(None, "--output",
                                      help="endpoint (KServe v2): which output to read "
                                           "(default: the first that fits)"),
    input_datatype: str | None = typer.Option(None, "--input-datatype",
                                              help="endpoint (KServe v2): the input "
                                                   "tensor's datatype, e.g. FP32, UINT8 "
                                                   "(default FP32)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every evidence field"),
    force: bool = typer.Option(False, "--force", help="overwrite an earlier report"),
) -> None:
    """Print a verdict (exit 0 OWNED, 1 otherwise) with its evidence.

    OWNED: a validly signed claim and evidence beyond chance (a p-value below the threshold,
    or for a signature the claimed tag decoded from the suspect). NOT OWNED: the evidence
    is not there, or the claim is invalid. COULD NOT VERIFY: the suspect cannot be checked
    against this claim (e.g. another architecture). docs/verdicts.md explains each.

    The suspect is a ticket, a plain .safetensors / .pt state dict, an .onnx file, a folder
    holding one of them, or an http(s) endpoint (ticketmark's /predict or KServe v2).
    """
    # A report that cannot be written must not cost the verdict: verify first, print it,
    # and only then name the report problem (one error line, exit 2).
    problem = None
    if report is not None:
        scheme = load_claim(claim).scheme
        problem = existing_report_file(report, REPORT_FILES.get(scheme, []), force)
    options = VerifyOptions(reference=reference, reveal=reveal, null_models=null_models,
                            search=search,
                            threshold=threshold, full_evidence=full_evidence,
                            report_dir=report if problem is None else None,
                            max_queries=max_queries, timeout=timeout, batch_size=batch_size,
                            deadline=deadline,
                            adapter=_adapter(adapter, protocol, input_layout, input_mean,
                                             input_std, input_scale, input_name, output,
                                             input_datatype))
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
    if problem is not None:
        sys.stdout.flush()
        raise TicketmarkError(f"{problem} (the verdict above was not saved)")
    if report is not None:
        atomic_write_json(report / f"verdict_{verdict.scheme}.json", verdict.to_json())
        print(f"  report: {report / f'verdict_{verdict.scheme}.json'}")
    sys.stdout.flush()
    raise typer.Exit(verdict.exit_code)
