"""Commitments and reveal files: what the owner publishes before release, and reveals later.

A derived set's seed is bound to the owner's key (``ticketmark.ownership.keyed``): the
*reveal* is the owner's deterministic Ed25519 signature over ``("trigger", nonce)``, with
a fresh nonce per claim, and the seed is its hash. The claim publishes the nonce,
``seed_commitment = H(seed)`` and ``commitment = SHA-256(canonical JSON of {seed
commitment, nonce, generator version, kind, parameters, excluded groups, digest of the
base images})``. On verification the reveal is checked against the *claim's* public key
and nonce before anything else, so

* a claim re-signed by another key, copying the owner's commitments, cannot be opened by
  the owner's reveal (the signature is not by that key): NOT OWNED;
* a reveal made for another claim (another nonce) opens nothing;
* the revealed set must be exactly the committed one (base images and exclusions too).

A folder set's secret is the folder itself; its commitment also names the claim's public
key, so copying it under another key fails the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_json
from ticketmark.io.untrusted import check_int, read_json, read_npy
from ticketmark.ownership import keyed
from ticketmark.ownership.claims import Claim, canonical
from ticketmark.ownership.trigger.generate import (
    GENERATOR_VERSION,
    MAX_ELEMENTS,
    TriggerParams,
    bases_digest,
)

SCHEME = "trigger"
MAX_REVEAL_BYTES = 64 << 20  # base images of a large set fit; a hostile file does not
REVEAL_FORMAT = "ticketmark-trigger-reveal/2"
OLD_FORMATS = ("ticketmark-trigger-seed/1",)
COMMIT_DOMAIN = "ticketmark-trigger-commitment/2"


@dataclass
class Reveal:
    """What the owner reveals for a derived set: the key-bound token and the set's
    committed specifics (excluded groups, base images of stamped marks)."""

    token: bytes
    excluded: list[int]
    bases: np.ndarray | None = None

    @property
    def seed(self) -> bytes:
        return keyed.seed_of(self.token)


def new_nonce() -> str:
    """A fresh per-claim nonce: two claims by one key never share a seed."""
    return secrets.token_hex(16)


def owner_reveal(key: Ed25519PrivateKey, nonce: str, excluded: list[int] | None = None,
                 bases: np.ndarray | None = None) -> Reveal:
    """The owner's reveal for ``nonce``: re-derivable from the key at any time."""
    return Reveal(keyed.reveal(key, SCHEME, nonce), sorted(int(i) for i in excluded or []),
                  bases)


def commitment(secret: str, kind: str, params: dict[str, Any], excluded: list[int],
               nonce: str, bases: str, owner: str = "",
               version: str = GENERATOR_VERSION) -> str:
    body = {"domain": COMMIT_DOMAIN, "secret": secret, "nonce": nonce, "generator": version,
            "kind": kind, "params": params, "excluded": sorted(int(i) for i in excluded),
            "bases": bases, "owner": owner}
    return hashlib.sha256(canonical(body)).hexdigest()


def derived_claim_params(reveal: Reveal, nonce: str, params: TriggerParams) -> dict[str, Any]:
    """The signed claim's params for a derived set (reveals nothing of the seed)."""
    sealed = keyed.commitment(reveal.seed)
    return {"kind": "derived", "generator": GENERATOR_VERSION, "trigger": params.to_dict(),
            "nonce": nonce, "seed_commitment": sealed,
            "commitment": commitment(sealed, "derived", params.to_dict(), reveal.excluded,
                                     nonce, bases_digest(reveal.bases))}


def folder_claim_params(digest: str, params: TriggerParams, owner_public_key: str
                        ) -> dict[str, Any]:
    """The signed claim's params for a folder set, bound to the claim's public key."""
    return {"kind": "folder", "generator": GENERATOR_VERSION, "trigger": params.to_dict(),
            "commitment": commitment(digest, "folder", params.to_dict(), [], "", "",
                                     owner_public_key)}


def open_derived(claim: Claim, reveal: Reveal, params: TriggerParams) -> bytes:
    """The seed, if ``reveal`` opens this claim; else a one-line TicketmarkError saying why
    (by another key, for another claim, or not the committed set)."""
    cp = claim.params
    nonce, sealed = cp.get("nonce"), cp.get("seed_commitment")
    if not isinstance(nonce, str) or not isinstance(sealed, str):
        raise TicketmarkError("the claim holds no key-bound seed commitment (nonce, "
                              "seed_commitment)")
    seed = keyed.open_reveal(claim.public_key, SCHEME, nonce, reveal.token, sealed)
    expected = commitment(sealed, "derived", params.to_dict(), reveal.excluded, nonce,
                          bases_digest(reveal.bases))
    if expected != cp.get("commitment"):
        raise TicketmarkError("the revealed set (excluded groups, base images) is not the "
                              "committed one")
    return seed


def _encode_bases(bases: np.ndarray | None) -> str | None:
    if bases is None:
        return None
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(bases, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def _decode_bases(text: Any) -> np.ndarray | None:
    if text is None:
        return None
    raw = base64.b64decode(str(text), validate=True)
    # The header is checked before anything is allocated (np.load trusts it: a reveal
    # claiming a 3.6 TiB shape was a MemoryError); never unpickled.
    arr = np.array(read_npy(raw, MAX_ELEMENTS, "f"))
    if arr.dtype != np.float32 or arr.ndim != 4:
        raise ValueError(f"base images must be float32 (N, C, H, W), got {arr.dtype} "
                         f"{arr.shape}")
    return arr


def save_reveal(path: str | Path, reveal: Reveal) -> Path:
    """Write the reveal file (owner-only permissions until the day it is revealed)."""
    path = Path(path)
    atomic_write_json(path, {"format": REVEAL_FORMAT, "scheme": SCHEME,
                             "reveal": keyed.encode(reveal.token),
                             "excluded": sorted(int(i) for i in reveal.excluded),
                             "bases": _encode_bases(reveal.bases)}, secret=True)
    return path


def load_reveal(path: str | Path) -> Reveal:
    """Read a reveal file; anything malformed is a one-line TicketmarkError."""
    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no trigger reveal file at {path}")
    try:
        obj = read_json(path, "trigger reveal file", MAX_REVEAL_BYTES)  # size and depth capped
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        fmt = obj.get("format")
        if fmt in OLD_FORMATS:
            raise TicketmarkError(f"{path} is an old {fmt} seed file, not bound to the "
                                  f"owner's key; this version verifies only "
                                  f"{REVEAL_FORMAT} reveals (re-embed the trigger set)")
        if fmt != REVEAL_FORMAT:
            raise ValueError(f"format is {fmt!r}, expected {REVEAL_FORMAT!r}")
        token = keyed.decode(obj["reveal"])
        raw = obj.get("excluded", [])
        if not isinstance(raw, list) or len(raw) > 1_000_000:
            raise ValueError("excluded must be a list of group indices")
        excluded = [check_int(i, "excluded group", 0, 1_000_000, str(path)) for i in raw]
        bases = _decode_bases(obj.get("bases"))
    except TicketmarkError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise TicketmarkError(f"{path} is not a trigger reveal file ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError,
            ValueError, binascii.Error, OSError, EOFError) as exc:
        raise TicketmarkError(f"{path} is not a trigger reveal file ({exc})") from None
    if len(token) != keyed.REVEAL_BYTES:
        raise TicketmarkError(f"{path}: the reveal must be {keyed.REVEAL_BYTES} bytes, got "
                              f"{len(token)}")
    return Reveal(token, excluded, bases)
