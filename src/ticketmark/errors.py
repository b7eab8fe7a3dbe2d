"""One exception type for every problem a user can fix.

The CLI turns a ``TicketmarkError`` into a single ``error: ...`` line and exit code 2, so
anything raised with this type must read well on its own, naming the file, layer or value
at fault.
"""


class TicketmarkError(Exception):
    """A user-facing problem (bad input, missing file, mismatched shapes)."""
