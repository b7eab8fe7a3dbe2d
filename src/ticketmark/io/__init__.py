"""Tickets on disk: safetensors + a JSON sidecar, written atomically, never unpickled."""

from ticketmark.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from ticketmark.io.ticket import Ticket, fingerprint, load_ticket, resolve_ticket_path, save_ticket

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
