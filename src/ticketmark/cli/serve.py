"""``ticketmark serve``: answer predictions of a ticket over HTTP on 127.0.0.1.

What a thief would deploy, and what ``verify --suspect http://...`` queries. Bound to the
loopback interface only: this is a verification aid, not a production server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError

# The server's limits (ticketmark.serving.server loads torch; a test keeps them equal).
MAX_BODY = 32 * 1024 * 1024
MAX_BATCH = 1024


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="ticket / model file to serve"),
    port: int = typer.Option(8080, help="TCP port on 127.0.0.1 (0: any free port)"),
    max_body: int = typer.Option(MAX_BODY, help="largest request body in bytes"),
    max_batch: int = typer.Option(MAX_BATCH, help="most inputs per request"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every request"),
) -> None:
    """Serve POST /predict (JSON inputs -> labels) and GET /health until interrupted."""
    if not 0 <= port <= 65535:
        raise TicketmarkError(f"port must be in 0..65535, got {port}")
    if max_body < 1 or max_batch < 1:
        raise TicketmarkError("--max-body and --max-batch must be positive")
    from ticketmark.io import load_ticket
    from ticketmark.serving.server import make_server

    ticket = load_ticket(model)
    net = ticket.build()
    try:
        server = make_server(net, (ticket.in_channels, ticket.image_size, ticket.image_size),
                             ticket.num_classes, port, max_body=max_body, max_batch=max_batch,
                             quiet=not verbose)
    except OSError as exc:
        raise TicketmarkError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror})") from None
    print(f"serving {model} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.stdout.flush()
