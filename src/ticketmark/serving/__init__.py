"""A prediction endpoint for a ticket: what a thief would deploy, and what verify queries.

``protocol`` (ticketmark's JSON) and ``oip`` (Open Inference Protocol / KServe v2) are the
wire formats shared by server and client; ``app`` is the Starlette application with every
limit; ``server`` runs it on uvicorn bound to 127.0.0.1.
"""

from ticketmark.serving.protocol import decode_inputs, encode_npy
from ticketmark.serving.server import Limits, make_server, serve_in_thread

__all__ = ["Limits", "decode_inputs", "encode_npy", "make_server", "serve_in_thread"]
