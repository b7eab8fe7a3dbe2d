"""``ticketmark serve``: answer predictions of a ticket over HTTP on 127.0.0.1.

What a thief would deploy, and what ``verify --suspect http://...`` queries. It speaks
ticketmark's ``POST /predict`` and the Open Inference Protocol (KServe v2,
``POST /v2/models/NAME/infer``) on uvicorn, with every request bounded (see
``ticketmark.serving.app``). Bound to the loopback interface only: a verification aid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError
from ticketmark.serving.limits import MAX_BATCH, MAX_BODY, Limits

_DEFAULTS = Limits()  # serving.limits is light: --help loads neither torch nor uvicorn


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="ticket / model file to serve"),
    port: int = typer.Option(8080, help="TCP port on 127.0.0.1 (0: any free port)"),
    name: str = typer.Option("ticket", help="model name in the KServe v2 routes"),
    max_body: int = typer.Option(MAX_BODY, help="largest request body in bytes"),
    max_batch: int = typer.Option(MAX_BATCH, help="most inputs per request"),
    timeout: float = typer.Option(_DEFAULTS.timeout,
                                  help="seconds for a request's headers and body, and for "
                                       "a free slot"),
    workers: int = typer.Option(_DEFAULTS.workers, help="threads parsing and predicting"),
    max_pending: int = typer.Option(_DEFAULTS.max_pending,
                                    help="requests admitted at once (bodies in memory)"),
    max_connections: int = typer.Option(_DEFAULTS.max_connections,
                                        help="open connections; a new one closes the "
                                             "oldest stalled one, else gets 503"),
    max_per_peer: int = typer.Option(_DEFAULTS.max_per_peer,
                                     help="open connections from one address (the same "
                                          "rule)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every request"),
) -> None:
    """Serve POST /predict and the KServe v2 routes, GET /health, until interrupted."""
    if not 0 <= port <= 65535:
        raise TicketmarkError(f"port must be in 0..65535, got {port}")
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise TicketmarkError("--name must be 1-100 letters, digits, '-', '_' or '.'")
    try:
        limits = Limits(max_body=max_body, max_batch=max_batch, timeout=timeout,
                        workers=workers, max_pending=max_pending,
                        max_connections=max_connections,
                        max_per_peer=max_per_peer).validate()
    except ValueError as exc:
        raise TicketmarkError(f"bad server limit: {exc}") from None

    from ticketmark.io import load_ticket
    from ticketmark.serving.server import make_server

    ticket = load_ticket(model)
    try:
        server = make_server(ticket.build(), (ticket.in_channels, ticket.image_size,
                                              ticket.image_size),
                             ticket.num_classes, port, name=name, limits=limits,
                             quiet=not verbose)
    except OSError as exc:
        raise TicketmarkError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror})") from None
    print(f"serving {model} on {server.url} and {server.v2_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.stdout.flush()
