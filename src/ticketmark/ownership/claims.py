"""Signed claims: what an owner asserts about a ticket, verifiable by anyone.

A claim is JSON: ``{"claim": BODY, "signature": B64}`` where BODY names the scheme, the
owner's public key, the ticket fingerprint, the scheme's parameters and commitments. The
signature is Ed25519 over BODY's canonical JSON (sorted keys, no spaces), so any change to
any field, the public key included, invalidates it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark import __version__
from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_json
from ticketmark.io.untrusted import check_str, read_json, show
from ticketmark.ownership.keys import public_key_b64, public_key_from_b64

CLAIM_FORMAT = "ticketmark-claim/1"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Claim:
    body: dict[str, Any]
    signature: str

    @property
    def scheme(self) -> str:
        return str(self.body.get("scheme", ""))

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params", {})
        if not isinstance(params, dict):  # load_claim refuses these; hand-built claims too
            raise TicketmarkError(f"claim params must be an object, got {show(params)}")
        return dict(params)

    @property
    def public_key(self) -> str:
        return str(self.body.get("owner_public_key", ""))

    def signature_valid(self) -> bool:
        try:
            key = public_key_from_b64(self.public_key)
            key.verify(base64.b64decode(self.signature, validate=True), canonical(self.body))
        except (InvalidSignature, ValueError, TicketmarkError, RecursionError):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.body, "signature": self.signature}


def make_claim(key: Ed25519PrivateKey, scheme: str, fingerprint: str,
               params: dict[str, Any], message: str = "") -> Claim:
    body = {
        "format": CLAIM_FORMAT,
        "scheme": scheme,
        "owner_public_key": public_key_b64(key),
        "message": message,
        "model_fingerprint": fingerprint,
        "params": params,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": f"ticketmark {__version__}",
    }
    sig = base64.b64encode(key.sign(canonical(body))).decode()
    return Claim(body, sig)


def save_claim(path: str | Path, claim: Claim) -> Path:
    atomic_write_json(path, claim.to_json())
    return Path(path)


MAX_CLAIM_BYTES = 4 * 1024 * 1024  # claims are a few kilobytes
# Fields every claim body carries, and their JSON types; the scheme checks ``params``.
BODY_FIELDS: dict[str, type] = {"scheme": str, "owner_public_key": str, "message": str,
                                "model_fingerprint": str, "params": dict}
OPTIONAL_FIELDS: dict[str, type] = {"created": str, "software": str}


def parse_claim(obj: Any, source: str) -> Claim:
    """A claim from parsed JSON, every top-level field checked by type."""
    if not isinstance(obj, dict) or "claim" not in obj or "signature" not in obj:
        raise TicketmarkError(f"{source} is not a ticketmark claim file")
    body, sig = obj["claim"], obj["signature"]
    if not isinstance(body, dict) or body.get("format") != CLAIM_FORMAT:
        raise TicketmarkError(f"{source} is not a {CLAIM_FORMAT} claim")
    check_str(sig, "signature", source, 1000)
    for key, typ in BODY_FIELDS.items():
        if not isinstance(body.get(key), typ):
            raise TicketmarkError(f"{source}: claim field {key!r} must be a "
                                  f"{'string' if typ is str else 'JSON object'}, got "
                                  f"{show(body.get(key))}")
    for key, typ in OPTIONAL_FIELDS.items():
        if key in body and not isinstance(body[key], typ):
            raise TicketmarkError(f"{source}: claim field {key!r} must be a string, got "
                                  f"{show(body[key])}")
    return Claim(body, sig)


def load_claim(path: str | Path) -> Claim:
    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no claim file at {path}")
    return parse_claim(read_json(path, "ticketmark claim file", MAX_CLAIM_BYTES), str(path))
