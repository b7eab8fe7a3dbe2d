"""Commitments and seed files: what the owner publishes before release, and reveals later.

The claim carries ``commitment = SHA-256(canonical JSON of {secret hash, generator version,
kind, parameters, excluded slots})``. The secret hash is SHA-256 of the seed (or of the
folder's bytes); publishing the commitment reveals neither. On verification the revealed
secret is hashed again and the commitment recomputed from the claim's own fields, so the
revealed set must be exactly the one the owner committed to, before the suspect existed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_json
from ticketmark.ownership.claims import canonical
from ticketmark.ownership.trigger.generate import GENERATOR_VERSION, SEED_BYTES

SEED_FORMAT = "ticketmark-trigger-seed/1"
COMMIT_DOMAIN = "ticketmark-trigger-commitment/1"


def secret_hash(secret: bytes) -> str:
    """The seed's public hash: a domain-separated SHA-256, safe to publish."""
    return hashlib.sha256(b"ticketmark-trigger-secret/1\0" + secret).hexdigest()


def commitment(secret_digest: str, kind: str, params: dict[str, Any],
               excluded: list[int], version: str = GENERATOR_VERSION) -> str:
    body = {"domain": COMMIT_DOMAIN, "secret_hash": secret_digest, "generator": version,
            "kind": kind, "params": params, "excluded": sorted(int(i) for i in excluded)}
    return hashlib.sha256(canonical(body)).hexdigest()


def save_seed(path: str | Path, seed: bytes, excluded: list[int]) -> Path:
    """Write the revealable secret (owner-only permissions until the day it is revealed)."""
    path = Path(path)
    atomic_write_json(path, {"format": SEED_FORMAT, "kind": "derived", "seed": seed.hex(),
                             "excluded": sorted(int(i) for i in excluded)}, secret=True)
    return path


def load_seed(path: str | Path) -> tuple[bytes, list[int]]:
    """Read a revealed seed file; anything malformed is a one-line TicketmarkError."""
    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no trigger seed file at {path}")
    try:
        obj = json.loads(path.read_text())
        if obj.get("format") != SEED_FORMAT:
            raise ValueError(f"format is {obj.get('format')!r}, expected {SEED_FORMAT!r}")
        seed = bytes.fromhex(obj["seed"])
        excluded = [int(i) for i in obj.get("excluded", [])]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError,
            ValueError) as exc:
        raise TicketmarkError(f"{path} is not a trigger seed file ({exc})") from None
    if len(seed) != SEED_BYTES:
        raise TicketmarkError(f"{path}: the seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return seed, excluded
