"""Shared option helpers so every command spells the same flag the same way."""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.io import Ticket, load_ticket

TicketArg = typer.Option(..., "--ticket", help="ticket file (.safetensors) or run directory")


def load(path: Path) -> Ticket:
    return load_ticket(path)
