"""Every bound ``ticketmark serve`` enforces, in a module light enough for CLI start-up."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BODY = 32 * 1024 * 1024
MAX_BATCH = 1024


@dataclass
class Limits:
    """Every bound the server enforces; the CLI exposes each as a flag."""

    max_body: int = MAX_BODY  # bytes of one request body
    max_batch: int = MAX_BATCH  # inputs in one request
    timeout: float = 10.0  # s: request headers, body, and the wait for a free slot
    workers: int = 2  # threads parsing bodies and running the model
    max_pending: int = 16  # requests admitted at once (their bodies are in memory)
    max_connections: int = 256  # open connections; a newcomer closes a stalled one
    max_per_peer: int = 64  # open connections from one address (same eviction)
    backlog: int = 1024  # listen queue: bursts of new connections wait, not reset
    keep_alive: float = 5.0  # s an idle keep-alive connection stays open

    def validate(self) -> Limits:
        for name in ("max_body", "max_batch", "workers", "max_pending", "max_connections",
                     "max_per_peer", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.timeout > 0 or not self.keep_alive > 0:
            raise ValueError("timeouts must be positive")
        return self
