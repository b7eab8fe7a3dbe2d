"""A prediction endpoint for a ticket: what a thief would deploy, and what verify queries.

``protocol`` is the wire format shared by server and client; ``server`` is a stdlib
``ThreadingHTTPServer`` bound to 127.0.0.1.
"""

from ticketmark.serving.protocol import decode_inputs, encode_npy
from ticketmark.serving.server import make_server, serve_in_thread

__all__ = ["decode_inputs", "encode_npy", "make_server", "serve_in_thread"]
