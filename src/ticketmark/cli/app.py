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


@app.callback()
def _global_options(
    threads: int | None = typer.Option(
        None, "--threads", min=0, metavar="N",
        help="torch CPU threads (default 1, or $TICKETMARK_THREADS; 0: every core). One "
             "is fastest for ticketmark's small tensors on a shared machine."),
) -> None:
    # Runs before any subcommand (and before its --help); torch is imported only by the
    # command itself, so this costs nothing for --help.
    from ticketmark.threads import use_threads

    use_threads(threads)


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
    derive,
    timestamp,
    demo,
    trigger,
    serve,
    report,
    robustness,
    transfer,
)
