"""A prediction endpoint for a ticket: what a thief would deploy, and what verify queries.

``protocol`` (ticketmark's JSON) and ``oip`` (Open Inference Protocol / KServe v2) are the
wire formats shared by server and client; ``limits`` the bounds; ``app`` the Starlette
application that enforces them; ``server`` runs it on uvicorn bound to 127.0.0.1. The names
below are imported on first use, so ``ticketmark.serving.limits`` stays cheap for the CLI.
"""

from __future__ import annotations

_LAZY = {
    "Limits": "ticketmark.serving.limits",
    "decode_inputs": "ticketmark.serving.protocol",
    "encode_npy": "ticketmark.serving.protocol",
    "make_server": "ticketmark.serving.server",
    "serve_in_thread": "ticketmark.serving.server",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ticketmark.serving' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
