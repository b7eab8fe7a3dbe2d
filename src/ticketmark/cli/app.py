"""The Typer application; each subcommand lives in its own module and registers here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ticketmark",
    help="Find lottery tickets, embed ownership credentials, attack and verify them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module adds its commands to ``app`` on import (order = order in --help).
from ticketmark.cli import (  # noqa: E402,F401,I001
    find,
    info,
    keygen,
    attack,
    embed,
    lock,
    verify,
    dispute,
    demo,
    trigger,
    serve,
    report,
    robustness,
    transfer,
)
