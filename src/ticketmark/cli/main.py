"""Entry point: run the Typer app and turn every user-facing failure into one line.

Exit codes: 0 success, 1 a negative verdict (verify), 2 bad input or usage. Set
``TICKETMARK_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys

import typer
from typer._click import exceptions as click_errors  # Typer vendors Click

from ticketmark.errors import TicketmarkError


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    from ticketmark import usercode
    from ticketmark.cli.app import app

    # Import strings the user typed (--model pkg.mod:factory) may be imported; those a
    # ticket's sidecar names may not, unless --trust-model-code (docs/security.md).
    usercode.trust_from_argv(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, standalone_mode=False, prog_name="ticketmark")
    except TicketmarkError as exc:
        _fail(str(exc))
    except click_errors.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except click_errors.UsageError as exc:
        hint = f" (see 'ticketmark {exc.ctx.info_name} --help')" if exc.ctx else ""
        _fail(exc.format_message().splitlines()[-1] + hint)
    except click_errors.ClickException as exc:
        _fail(exc.format_message())
    except typer.Exit as exc:
        if exc.exit_code == 130 and isinstance(exc.__cause__, KeyboardInterrupt):
            _fail("interrupted", 130)  # Typer turns Ctrl-C into a silent Exit(130)
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except FileNotFoundError as exc:
        _fail(f"no such file: {exc.filename}")
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. '| head'); nothing left to say
        sys.exit(1)
    except PermissionError as exc:
        _fail(f"permission denied: {exc.filename}")
    except Exception as exc:  # noqa: BLE001 - last line of defence: no tracebacks for users
        if os.environ.get("TICKETMARK_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set TICKETMARK_DEBUG=1 for details)", 3)
    sys.exit(code if isinstance(code, int) else 0)
