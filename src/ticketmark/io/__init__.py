"""Tickets on disk: safetensors + a JSON sidecar, written atomically, never unpickled.

``atomic`` is imported at once (keys and claims need it, and it is light); the ticket
functions are imported on first use, because ``ticket`` loads torch and every command that
only writes a key or a claim, and ``ticketmark --help``, would otherwise pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ticketmark.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from ticketmark.io.ticket import (
        Ticket,
        fingerprint,
        load_ticket,
        resolve_ticket_path,
        save_ticket,
    )

_FROM_TICKET = frozenset({"Ticket", "fingerprint", "load_ticket", "resolve_ticket_path",
                          "save_ticket"})


def __getattr__(name: str) -> Any:
    if name in _FROM_TICKET:
        from ticketmark.io import ticket

        value = getattr(ticket, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Ticket",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fingerprint",
    "load_ticket",
    "resolve_ticket_path",
    "save_ticket",
]
