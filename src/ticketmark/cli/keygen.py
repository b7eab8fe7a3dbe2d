"""``ticketmark keygen``: the owner's Ed25519 identity."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", help="prefix: writes PREFIX.pem and PREFIX.pub"),
    passphrase_env: str | None = typer.Option(
        None, help="name of an environment variable holding a passphrase for the private key"),
    force: bool = typer.Option(False, "--force", help="replace an existing key pair (the old "
                                                      "private key is lost)"),
) -> None:
    """Create an owner key pair (private key PEM, public key PEM)."""
    from ticketmark.ownership.keys import keygen as make_keys
    from ticketmark.training.progress import console

    if not force:  # the CLI's words for the refusal keygen() would give in Python
        for p in (out.with_name(out.name + ".pem"), out.with_name(out.name + ".pub")):
            if p.exists():
                raise TicketmarkError(f"{p} exists; overwriting a key loses it for good "
                                      "(pass --force to replace it)")
    passphrase = os.environ.get(passphrase_env) if passphrase_env else None
    priv, pub = make_keys(out, passphrase, force=force)
    console.print(f"private key: {priv}{' (encrypted)' if passphrase else ''}\npublic key: {pub}")
