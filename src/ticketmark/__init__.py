"""ticketmark: find lottery tickets and make them claim their ownership."""

__version__ = "0.1.0"
