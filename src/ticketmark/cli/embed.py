"""``ticketmark embed``: draw a signed QR code into a ticket's topology (scheme 2)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ticketmark.cli.app import app
from ticketmark.cli.options import ForceOpt, refuse_overwrite, ticket_files
from ticketmark.cli.timestamp import stamp_after_embed
from ticketmark.errors import TicketmarkError
from ticketmark.ownership.claims import save_claim

if TYPE_CHECKING:  # loads torch: imported when the command runs
    from ticketmark.io import Ticket
    from ticketmark.ownership.claims import Claim
from ticketmark.ownership.keys import load_private_key
from ticketmark.ownership.timestamp import check_tsa_url


def default_out(ticket: Path) -> Path:
    from ticketmark.io import resolve_ticket_path

    p = resolve_ticket_path(ticket)
    return p.with_name(p.stem + "_signed.safetensors")


def claim_path_for(out: Path) -> Path:
    from ticketmark.io import resolve_ticket_path

    p = resolve_ticket_path(out)
    return p.with_name(p.stem + ".signature.claim.json")


def reveal_path_for(out: Path) -> Path:
    from ticketmark.io import resolve_ticket_path

    p = resolve_ticket_path(out)
    return p.with_name(p.stem + ".signature.reveal.json")
def save_signed_pair(out: Path, ticket: Ticket, claim_out: Path, claim: Claim) -> None:
    """Claim first, then the ticket: a kill in between never leaves a ticket without its
    claim (a claim without its ticket is harmless: nothing was released), and a failure to
    write the ticket takes the new claim back out."""
    from ticketmark.io import save_ticket

    existed = claim_out.exists()
    save_claim(claim_out, claim)
    try:
        save_ticket(out, ticket)
    except BaseException:
        if not existed:
            claim_out.unlink(missing_ok=True)
        raise


@app.command()
def embed(
    ticket: Path = typer.Option(..., "--ticket", help="ticket file (.safetensors) or run dir"),
    key: Path = typer.Option(..., "--key", help="owner's private key (PEM, from keygen)"),
    message: str = typer.Option(..., "--message", help="text the claim carries (who owns it)"),
    layer: str | None = typer.Option(None, "--layer", help="conv layer to draw the code into "
                                                           "(default: best-fitting)"),
    out: Path | None = typer.Option(None, "--out", help="signed ticket (default: "
                                                        "TICKET_signed.safetensors)"),
    claim: Path | None = typer.Option(None, "--claim", help="claim file (default: "
                                                            "OUT.signature.claim.json)"),
    reveal_out: Path | None = typer.Option(
        None, "--reveal-out", help="secret file that opens the hidden bits at a dispute "
                                   "(default: OUT.signature.reveal.json; keep it private)"),
    hidden_bits: int = typer.Option(1024, help="key-derived bits hidden over the whole ticket "
                                               "besides the QR (0: QR only)"),
    passphrase_env: str | None = typer.Option(
        None, help="name of an environment variable holding the key's passphrase"),
    min_entries: int = typer.Option(4, help="unpruned weights per dark module's kernel"),
    floor_quantile: float = typer.Option(
        0.5, help="hold dark kernels' weights at least at this quantile of the layer's |w| "
                  "while retraining (0: off)"),
    epochs: int | None = typer.Option(None, help="retraining epochs (default: the ticket's "
                                                 "recipe)"),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
    device: str | None = typer.Option(None, help="where to retrain: auto, cpu, cuda, cuda:1 "
                                                 "... (default: the ticket's recipe)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    force: bool = ForceOpt,
    tsa: str | None = typer.Option(None, "--tsa", help="RFC 3161 time-stamp authority URL: "
                                                       "stamp the claim (CLAIM.tst)"),
) -> None:
    """Embed a signature: QR code in a layer's connectivity, retrain, write a signed claim."""
    from ticketmark.io import load_ticket, resolve_ticket_path
    from ticketmark.ownership.signature import EmbedOptions, embed_signature
    from ticketmark.ownership.signature.hidden import save_reveal

    source = resolve_ticket_path(ticket)
    out_path = resolve_ticket_path(out) if out is not None else default_out(ticket)
    if out_path.resolve() == source.resolve():
        raise TicketmarkError("--out must differ from --ticket (the original stays untouched)")
    claim_out = claim or claim_path_for(out_path)
    reveal_file = reveal_out or reveal_path_for(out_path)
    if not 0 <= hidden_bits <= 65536:
        raise TicketmarkError(f"--hidden-bits must be in 0..65536, got {hidden_bits}")
    refuse_overwrite([*ticket_files(out_path), claim_out, reveal_file], force)
    if epochs is not None and epochs < 1:
        raise TicketmarkError(f"--epochs must be at least 1, got {epochs}")
    if tsa is not None:
        check_tsa_url(tsa)
    passphrase = os.environ.get(passphrase_env) if passphrase_env else None
    private = load_private_key(key, passphrase)  # fails before any training
    original = load_ticket(ticket)
    if device is not None:  # the retraining follows the ticket's recipe, on this device
        original.meta["train"] = {**(original.meta.get("train") or {}), "device": device}
    opts = EmbedOptions(layer=layer, min_entries=min_entries, epochs=epochs,
                        floor_quantile=floor_quantile, hidden_bits=hidden_bits,
                        data_dir=str(data_dir) if data_dir else None, progress=not quiet)
    result = embed_signature(original, private, message, opts)
    if result.reveal is not None:  # the secret first: a claim never goes out without it
        save_reveal(reveal_file, result.reveal)
    save_signed_pair(out_path, result.ticket, claim_out, result.claim)
    s = result.summary
    print(  # the command's result goes to stdout; progress and notes go to stderr
        f"signature {s['tag']} (QR version {s['qr_version']}, mask {s['qr_mask']}) in "
        f"{s['layer']} at ({s['row']}, {s['col']}), orientation {s['orientation']}: "
        f"{s['modules_changed']}/{s['modules']} modules changed\n"
        f"test accuracy {s['acc_before']:.2f}% -> {s['acc_after']:.2f}% "
        f"({s['acc_change']:+.2f} points after {s['retrain_epochs']} epochs)\n"
        f"hidden bits: {s['hidden_bits']} over {s['hidden_layers']} layers "
        f"({s['kernels_changed']} kernels changed in all)\n"
        f"ticket: {out_path}\nclaim:  {claim_out}"
        + (f"\nreveal: {reveal_file} (secret: opens the hidden bits at a dispute)"
           if result.reveal is not None else ""))
    for e in s["existing_codes"]:  # someone signed this ticket before
        print(f"note: a QR code was already drawn in {e['layer']} at ({e['row']}, {e['col']}); "
              "that layer was left alone", file=sys.stderr)
    stamp_after_embed(claim_out, tsa)
