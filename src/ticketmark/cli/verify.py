"""``ticketmark verify``: check a suspect model against a signed claim.

The claim names its scheme; each scheme's verifier lives in its own package and exposes
``verify_claim(suspect: str, claim: Claim, options: VerifyOptions) -> Verdict``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_json
from ticketmark.ownership.claims import load_claim
from ticketmark.ownership.derive import with_derivation
from ticketmark.ownership.verdict import Verdict, VerifyOptions

VERIFIERS = {
    "signature": "ticketmark.ownership.signature.verify",
    "trigger": "ticketmark.ownership.trigger.verify",
}


def scheme_verdict(suspect: str, claim_path: Path, options: VerifyOptions) -> Verdict:
    """The claim's scheme alone: does the suspect carry the credential?"""
    claim = load_claim(claim_path)
    module = VERIFIERS.get(claim.scheme)
    if module is None:
        raise TicketmarkError(f"{claim_path}: unknown scheme {claim.scheme!r} "
                              f"(known: {', '.join(VERIFIERS)})")
    return importlib.import_module(module).verify_claim(suspect, claim, options)


def verify_claim(suspect: str, claim_path: Path, options: VerifyOptions) -> Verdict:
    """Python entry point behind the command: dispatch the claim to its scheme; with a
    reference, derivation from it is reported beside the credential (``derive``)."""
    verdict = scheme_verdict(suspect, claim_path, options)
    return with_derivation(verdict, suspect, load_claim(claim_path), options,
                           lambda opts: scheme_verdict(suspect, claim_path, opts))


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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every evidence field"),
) -> None:
    """Print a verdict (exit 0 OWNED, 1 otherwise) with its evidence."""
    options = VerifyOptions(reference=reference, reveal=reveal, search=search,
                            threshold=threshold, full_evidence=full_evidence,
                            report_dir=report, max_queries=max_queries,
                            timeout=timeout, batch_size=batch_size)
    verdict = verify_claim(suspect, claim, options)
    print(f"{verdict.scheme}: {verdict.status} — {verdict.reason}")
    # Each scheme names the evidence that only breaks down its headline fields.
    details = getattr(importlib.import_module(VERIFIERS[verdict.scheme]), "DETAIL_KEYS",
                      frozenset())
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



