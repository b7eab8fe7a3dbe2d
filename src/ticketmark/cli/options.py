"""Shared option helpers so every command spells the same flag the same way."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ticketmark.errors import TicketmarkError

if TYPE_CHECKING:  # ticketmark.io loads torch: imported when a command runs, not at --help
    from ticketmark.io import Ticket

TicketArg = typer.Option(..., "--ticket", help="ticket file (.safetensors) or run directory")
ForceOpt = typer.Option(False, "--force", help="overwrite output files that already exist")
# ownership.derive.DEFAULT_THRESHOLD, spelled out so --help need not import torch
# (tests/test_startup.py keeps them equal).
DERIVE_THRESHOLD = 1e-6


def load(path: Path) -> Ticket:
    from ticketmark.io import load_ticket

    return load_ticket(path)


def ticket_files(path: Path) -> list[Path]:
    """The two files a ticket is written as: NAME.safetensors and its NAME.json sidecar."""
    from ticketmark.io import resolve_ticket_path

    p = resolve_ticket_path(path)
    return [p, p.with_suffix(".json")]


def refuse_overwrite(paths: Iterable[Path], force: bool, why: str = "") -> None:
    """Stop before any work when an output exists and --force was not given.

    Nothing is ever overwritten silently: a key, seed or claim replaced by mistake cannot
    be recovered, and a result file replaced by mistake loses a run.
    """
    if force:
        return
    for p in paths:
        if p.exists():
            raise TicketmarkError(f"{p} exists{why}; pass --force to overwrite it")


def existing_report_file(folder: Path, names: Iterable[str], force: bool) -> str | None:
    """Why ``folder/NAME`` cannot be written as a report (None: it can).

    Used by commands that print their result first and save it after: the result is never
    lost to a bad report path, the problem is named after it.
    """
    if folder.exists() and not folder.is_dir():
        return f"--report {folder} is a file, not a folder"
    if not force:
        for name in names:
            if (folder / name).exists():
                return f"{folder / name} exists; pass --force to overwrite it"
    return None
