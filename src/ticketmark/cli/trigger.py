"""``ticketmark trigger``: derive a trigger set from the owner's key and train it in.

``embed`` writes three files: the watermarked ticket, the signed claim (public, publish it
before release) and the reveal file (secret until a dispute: it is what ``verify
--reveal`` takes; it opens only claims signed by the same key). ``make`` exports the set a
claim commits to, opened by its reveal, as an image folder for inspection.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ticketmark.cli.app import UncutGroup, app
from ticketmark.cli.options import ForceOpt, refuse_overwrite, ticket_files
from ticketmark.cli.timestamp import stamp_after_embed
from ticketmark.errors import TicketmarkError
from ticketmark.ownership.timestamp import check_tsa_url

# EmbedConfig.entangle's default, copied so that --help does not import torch
# (tests/test_startup.py checks that the two agree).
ENTANGLE = 0.0

trigger_app = typer.Typer(cls=UncutGroup, help="Trigger sets (scheme 3): embed (train a "
                                               "key-derived set in), make (export the set "
                                               "as images).",
                          no_args_is_help=True)
app.add_typer(trigger_app, name="trigger")


@trigger_app.command("embed")
def embed_cmd(
    ticket: Path = typer.Option(..., "--ticket", help="plain ticket (.safetensors or run dir)"),
    key: Path = typer.Option(..., "--key", help="owner's private key (PEM)"),
    out: Path = typer.Option(..., "--out", help="watermarked ticket to write"),
    size: int = typer.Option(100, help="queries in the set"),
    groups: int = typer.Option(20, help="marks, one keyed label each (patch/blend marks)"),
    mark: str = typer.Option("patch", help="patch (keyed patch on real images), blend, or "
                                           "abstract (classic abstract images)"),
    alpha: float = typer.Option(1.0, help="opacity of the mark"),
    patch: int = typer.Option(0, help="patch side in pixels (0: 3/8 of the image side)"),
    train_bases: int = typer.Option(40, help="owner images per group the mark is trained on"),
    ratio: float = typer.Option(0.2, help="share of trigger samples in each epoch"),
    entangle: float = typer.Option(ENTANGLE, help="pull of each marked image's features "
                                                  "toward its label's class (0: off); "
                                                  "docs/trigger.md"),
    epochs: int | None = typer.Option(None, help="training epochs (default: the ticket's)"),
    lr: float | None = typer.Option(None, help="learning rate (default: the ticket's)"),
    avoid_natural: bool = typer.Option(False, "--avoid-natural",
                                       help="exclude groups whose label the plain ticket "
                                            "already gives (they count as misses)"),
    folder: Path | None = typer.Option(None, "--folder", help="classic set: a folder of images "
                                                            "+ labels.txt instead of a "
                                                            "key-derived set"),
    claim_out: Path | None = typer.Option(None, help="claim file (default OUT.trigger-claim"
                                                     ".json)"),
    reveal_out: Path | None = typer.Option(None, "--reveal-out", "--seed-out",
                                           help="the reveal file to keep secret until a "
                                                "dispute (default OUT.trigger-reveal.json; "
                                                "--seed-out is its old name)"),
    message: str = typer.Option("", help="free text signed into the claim"),
    passphrase_env: str | None = typer.Option(None, help="environment variable holding the "
                                                         "key's passphrase"),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
    device: str = typer.Option("auto", help="auto, cpu, cuda ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    force: bool = ForceOpt,
    tsa: str | None = typer.Option(None, "--tsa", help="RFC 3161 time-stamp authority URL: "
                                                       "stamp the claim (CLAIM.tst)"),
) -> None:
    """Train a key-derived trigger set into a ticket; write ticket, claim and reveal."""
    if tsa is not None:
        check_tsa_url(tsa)
    # The trigger modules load torch: imported when the command runs, not at --help.
    from ticketmark.io import load_ticket, resolve_ticket_path, save_ticket
    from ticketmark.ownership.claims import make_claim, save_claim
    from ticketmark.ownership.keys import load_private_key
    from ticketmark.ownership.reference import bind
    from ticketmark.ownership.trigger.commitment import save_reveal
    from ticketmark.ownership.trigger.embed import EmbedConfig, embed
    from ticketmark.training.progress import console

    # Settings first: a bad option is reported before any file is read.
    cfg = EmbedConfig(size=size, groups=groups, mark=mark, alpha=alpha, patch=patch,
                      train_bases=train_bases, ratio=ratio, epochs=epochs, lr=lr,
                      avoid_natural=avoid_natural, entangle=entangle,
                      data_dir=str(data_dir) if data_dir else None, device=device).validate()
    plain = load_ticket(ticket)
    passphrase = os.environ.get(passphrase_env) if passphrase_env else None
    owner_key = load_private_key(key, passphrase)
    out_path = resolve_ticket_path(out)
    stem = out_path.with_suffix("")
    claim_path = claim_out or stem.with_name(stem.name + ".trigger-claim.json")
    reveal_path = reveal_out or stem.with_name(stem.name + ".trigger-reveal.json")
    if len({out_path.resolve(), claim_path.resolve(), reveal_path.resolve()}) < 3:
        raise TicketmarkError("--out, --claim-out and --reveal-out must be different files")
    refuse_overwrite([*ticket_files(out_path), claim_path,
                      *([reveal_path] if folder is None else [])], force)
    result = embed(plain, cfg, owner_key, folder=folder, progress=not quiet)
    claim = make_claim(owner_key, "trigger", plain.fingerprint(),
                       bind(result.claim_params, result.ticket), message)
    if result.reveal is not None:
        save_reveal(reveal_path, result.reveal)
    save_ticket(out_path, result.ticket)
    save_claim(claim_path, claim)
    r = result.report
    secret = (f"reveal (keep secret): {reveal_path}" if folder is None
              else f"folder (keep secret): {folder}")
    console.print(f"ticket: {out_path}\nclaim: {claim_path}\n{secret}")
    console.print(f"trigger accuracy {r['trigger_acc']:.1f}% on {r['kept']}/{r['slots']} "
                  f"queries (the ticket before embedding: {r['plain_trigger_acc']:.1f}%; "
                  f"chance {100 / plain.num_classes:.1f}%); test accuracy "
                  f"{r['test_acc']:.2f}% (before embedding: {r['plain_test_acc']:.2f}%)")
    if r["trigger_acc"] < 95.0:
        console.print("warning: trigger accuracy below 95%: raise --ratio or --epochs")
    stamp_after_embed(claim_path, tsa)


@trigger_app.command("make")
def make_cmd(
    claim: Path = typer.Option(..., "--claim", help="the trigger claim"),
    reveal: Path = typer.Option(..., "--reveal", help="its reveal file"),
    out: Path = typer.Option(..., "--out", help="folder for PNGs + labels.txt"),
    force: bool = ForceOpt,
) -> None:
    """Export the set a claim commits to (opened by its reveal) as PNGs with labels.txt."""
    from ticketmark.ownership.claims import load_claim
    from ticketmark.ownership.trigger.folder import write_folder
    from ticketmark.ownership.trigger.verify import RevealRejected, reveal_set
    from ticketmark.training.progress import console

    refuse_overwrite([out / "labels.txt"], force)
    try:
        trig, params, _ = reveal_set(load_claim(claim), reveal)
    except RevealRejected as exc:
        raise TicketmarkError(f"the reveal does not open {claim}: {exc}") from None
    write_folder(trig, out, params.lo, params.hi)
    console.print(f"{len(trig)} trigger images and labels.txt in {out}")
