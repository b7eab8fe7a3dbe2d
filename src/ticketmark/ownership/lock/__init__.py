"""Scheme 1, locked tickets: cut the connections a ticket needs most and keep them as a key.

``choosers`` ranks what to cut (paths, betweenness or weight saliencies), ``locking`` cuts
it (and optionally adds random connections back so the counts give nothing away),
``keyfile`` seals the key, and ``evaluate`` measures how much the lock costs a retrainer.
"""

from ticketmark.ownership.lock.choosers import (
    CHOOSERS,
    PATH_METHODS,
    Choice,
    ChooserContext,
    Selection,
    choose,
)
from ticketmark.ownership.lock.keyfile import LockKey, read_key, write_key
from ticketmark.ownership.lock.locking import lock_ticket, random_positions, unlock_ticket

__all__ = [
    "CHOOSERS",
    "PATH_METHODS",
    "ChooserContext",
    "Choice",
    "LockKey",
    "Selection",
    "choose",
    "lock_ticket",
    "random_positions",
    "read_key",
    "unlock_ticket",
    "write_key",
]
