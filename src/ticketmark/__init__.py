"""ticketmark: find lottery tickets and make them claim their ownership.

``import ticketmark as tm`` is cheap: the API below (``tm.find``, ``tm.sign``, ``tm.verify``,
...) is imported from ``ticketmark.api`` on first use, so the CLI and scripts that need one
function do not pay for torch and every scheme at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Public name -> module that defines it (imported on first access).
_LAZY = {
    "find": "ticketmark.api",
    "sign": "ticketmark.api",
    "verify": "ticketmark.api",
    "load_ticket": "ticketmark.api",
    "load_weights": "ticketmark.api",
    "from_pruned": "ticketmark.api",
    "to_state_dict": "ticketmark.api",
    "save_state_dict": "ticketmark.api",
    "save_ticket": "ticketmark.io",
    "Ticket": "ticketmark.io",
    "save_claim": "ticketmark.ownership.claims",
    "load_claim": "ticketmark.ownership.claims",
    "keygen": "ticketmark.ownership.keys",
    "Verdict": "ticketmark.ownership.verdict",
    "TicketmarkError": "ticketmark.errors",
    "trust_model_code": "ticketmark.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ticketmark' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
