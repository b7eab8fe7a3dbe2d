"""The Typer application; each subcommand lives in its own module and registers here."""

from __future__ import annotations

import typer
from typer import _click
from typer.core import TyperGroup

# ``ticketmark --help`` lists the commands in the order a user meets them, in groups, each
# with its whole first sentence (Click cuts descriptions to fit one line).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Find and inspect tickets", ("find", "ternarize", "unpack", "info")),
    ("Claim ownership (the owner)", ("keygen", "embed", "trigger", "lock", "unlock",
                                     "timestamp")),
    ("Steal and attack (the thief)", ("attack", "serve")),
    ("Verify and decide", ("verify", "derive", "dispute")),
    ("Robust tickets", ("robustness", "transfer", "unpair")),
    ("The whole story", ("demo", "report")),
)


class UncutGroup(TyperGroup):
    """A command group whose ``--help`` shows each command's whole first sentence."""

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str(limit=10_000))
                for name in self.list_commands(ctx)
                if (cmd := self.commands.get(name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class OrderedGroup(UncutGroup):
    """The top-level group: commands in ``SECTIONS`` order, descriptions never cut."""

    def list_commands(self, ctx: _click.Context) -> list[str]:
        known = [name for _, names in SECTIONS for name in names if name in self.commands]
        return known + [name for name in self.commands if name not in known]

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        listed = set()
        for title, names in (*SECTIONS, ("Other commands", tuple(self.list_commands(ctx)))):
            rows = []
            for name in names:
                cmd = self.commands.get(name)
                if cmd is None or cmd.hidden or name in listed:
                    continue
                listed.add(name)
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(
    name="ticketmark",
    cls=OrderedGroup,
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
    trust_model_code: bool = typer.Option(
        False, "--trust-model-code",
        help="import the model or data code a ticket's sidecar names (package.module:"
             "factory); without it only code named on the command line is imported"),
) -> None:
    # Runs before any subcommand (and before its --help); torch is imported only by the
    # command itself, so this costs nothing for --help.
    from ticketmark.threads import use_threads

    use_threads(threads)
    if trust_model_code:
        from ticketmark import usercode

        usercode.trust_all()


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
    ternarize,
)
