"""``ticketmark trigger``: derive a trigger set from the owner's key and train it in.

``embed`` writes three files: the watermarked ticket, the signed claim (public, publish it
before release) and the seed file (secret until a dispute: it is what ``verify --reveal``
takes). ``make`` exports a derived set as an image folder, for inspection or for use as a
classic folder set.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.cli.app import app
from ticketmark.cli.timestamp import stamp_after_embed
from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket, resolve_ticket_path, save_ticket
from ticketmark.ownership.claims import make_claim, save_claim
from ticketmark.ownership.keys import load_private_key
from ticketmark.ownership.timestamp import check_tsa_url
from ticketmark.ownership.trigger.commitment import load_seed, save_seed
from ticketmark.ownership.trigger.embed import EmbedConfig, embed, load_ticket_data, params_for
from ticketmark.ownership.trigger.folder import write_folder
from ticketmark.ownership.trigger.generate import derive_seed, generate, random_seed
from ticketmark.training.progress import console

trigger_app = typer.Typer(help="Trigger sets (scheme 3): embed, export.", no_args_is_help=True)
app.add_typer(trigger_app, name="trigger")


def _seed(key_path: Path, passphrase_env: str | None, context: str, fresh: bool,
          seed_in: Path | None) -> tuple[bytes, Ed25519PrivateKey]:
    """The trigger seed (from --seed-in, fresh, or derived from the key) and the key."""
    passphrase = os.environ.get(passphrase_env) if passphrase_env else None
    key = load_private_key(key_path, passphrase)
    if seed_in is not None:
        return load_seed(seed_in)[0], key
    return (random_seed() if fresh else derive_seed(key, context)), key


@trigger_app.command("embed")
def embed_cmd(
    ticket: Path = typer.Option(..., "--ticket", help="plain ticket (.safetensors or run dir)"),
    key: Path = typer.Option(..., "--key", help="owner's private key (PEM)"),
    out: Path = typer.Option(..., "--out", help="watermarked ticket to write"),
    size: int = typer.Option(100, help="trigger slots"),
    ratio: float = typer.Option(0.2, help="share of trigger samples in each epoch"),
    epochs: int | None = typer.Option(None, help="training epochs (default: the ticket's)"),
    lr: float | None = typer.Option(None, help="learning rate (default: the ticket's)"),
    avoid_natural: bool = typer.Option(False, "--avoid-natural",
                                       help="exclude slots whose label the plain ticket "
                                            "already predicts (they count as misses)"),
    random: bool = typer.Option(False, "--random-seed",
                                help="fresh random seed instead of one derived from the key"),
    seed_in: Path | None = typer.Option(None, "--seed-in", help="reuse this seed file"),
    folder: Path | None = typer.Option(None, "--folder", help="classic set: a folder of images "
                                                            "+ labels.txt instead of a seed"),
    claim_out: Path | None = typer.Option(None, help="claim file (default OUT.trigger-claim"
                                                     ".json)"),
    seed_out: Path | None = typer.Option(None, help="secret seed file (default OUT.trigger-"
                                                    "seed.json)"),
    message: str = typer.Option("", help="free text signed into the claim"),
    passphrase_env: str | None = typer.Option(None, help="environment variable holding the "
                                                         "key's passphrase"),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
    device: str = typer.Option("auto", help="auto, cpu, cuda ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    tsa: str | None = typer.Option(None, "--tsa", help="RFC 3161 time-stamp authority URL: "
                                                       "stamp the claim (CLAIM.tst)"),
) -> None:
    """Train a key-derived trigger set into a ticket; write ticket, claim and seed."""
    if size < 1:
        raise TicketmarkError(f"--size must be >= 1, got {size}")
    if tsa is not None:
        check_tsa_url(tsa)
    plain = load_ticket(ticket)
    if folder is not None and (random or seed_in is not None):
        raise TicketmarkError("--folder replaces the seed: drop --random-seed / --seed-in")
    seed, owner_key = _seed(key, passphrase_env, plain.fingerprint(), random, seed_in)
    out_path = resolve_ticket_path(out)
    stem = out_path.with_suffix("")
    claim_path = claim_out or stem.with_name(stem.name + ".trigger-claim.json")
    seed_path = seed_out or stem.with_name(stem.name + ".trigger-seed.json")
    if len({out_path.resolve(), claim_path.resolve(), seed_path.resolve()}) < 3:
        raise TicketmarkError("--out, --claim-out and --seed-out must be different files")
    cfg = EmbedConfig(size=size, ratio=ratio, epochs=epochs, lr=lr, avoid_natural=avoid_natural,
                      data_dir=str(data_dir) if data_dir else None, device=device).validate()
    if folder is not None:
        result = embed(plain, cfg, folder=folder, progress=not quiet)
    else:
        result = embed(plain, cfg, seed=seed, progress=not quiet)
    claim = make_claim(owner_key, "trigger", plain.fingerprint(), result.claim_params, message)
    if folder is None:
        save_seed(seed_path, seed, result.trigger.excluded())
    save_ticket(out_path, result.ticket)
    save_claim(claim_path, claim)
    r = result.report
    secret = f"seed (keep secret): {seed_path}" if folder is None else f"folder: {folder}"
    console.print(f"ticket: {out_path}\nclaim: {claim_path}\n{secret}")
    console.print(f"trigger accuracy {r['trigger_acc']:.1f}% (plain {r['plain_trigger_acc']:.1f}%)"
                  f" on {r['kept']}/{r['slots']} slots; test accuracy {r['test_acc']:.2f}% "
                  f"(plain {r['plain_test_acc']:.2f}%)")
    if r["trigger_acc"] < 95.0:
        console.print("warning: trigger accuracy below 95%: raise --ratio or --epochs")
    stamp_after_embed(claim_path, tsa)


@trigger_app.command("make")
def make_cmd(
    ticket: Path = typer.Option(..., "--ticket", help="ticket whose input shape to match"),
    out: Path = typer.Option(..., "--out", help="folder for PNGs + labels.txt"),
    key: Path | None = typer.Option(None, "--key", help="derive the seed from this key"),
    seed_in: Path | None = typer.Option(None, "--seed-in", help="or take this seed file"),
    size: int = typer.Option(100, help="trigger slots"),
    passphrase_env: str | None = typer.Option(None, help="environment variable holding the "
                                                         "key's passphrase"),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
) -> None:
    """Export a derived trigger set as an image folder with labels.txt."""
    if (key is None) == (seed_in is None):
        raise TicketmarkError("give exactly one of --key or --seed-in")
    if size < 1:
        raise TicketmarkError(f"--size must be >= 1, got {size}")
    plain = load_ticket(ticket)
    if seed_in is not None:
        seed = load_seed(seed_in)[0]
    elif key is not None:
        seed, _ = _seed(key, passphrase_env, plain.fingerprint(), False, None)
    params = params_for(plain, load_ticket_data(plain, str(data_dir) if data_dir else None),
                        size)
    write_folder(generate(seed, params), out, params.lo, params.hi)
    console.print(f"{size} trigger images and labels.txt in {out}")
