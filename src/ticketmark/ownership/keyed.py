"""Secrets bound to an owner's key: only the key's holder can reveal them, anyone can check.

A hidden credential (the trigger set, the hidden signature bits) is generated from a seed
that must stay secret until a dispute, yet be provably the claimant's own. An HMAC of the
private key is secret but proves nothing: once revealed, a thief can paste it under a claim
signed with another key. Instead the seed is a hash of an Ed25519 *signature* over a
domain-separated context. Ed25519 signatures are deterministic (RFC 8032) and, with the
canonical-S check that OpenSSL applies, unique per (key, message), so

* the owner re-derives the same seed from the key at any time (nothing else to lose);
* the reveal is that signature: a verifier checks it against the claim's public key and
  the claim's own context, then hashes it to the seed, so a reveal only opens claims made
  by its key;
* before the reveal, the claim publishes only ``commitment = H(seed)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.errors import TicketmarkError
from ticketmark.ownership.keys import public_key_from_b64

DOMAIN = b"ticketmark-keyed-secret/1\0"
SEED_DOMAIN = b"ticketmark-keyed-seed/1\0"
COMMIT_DOMAIN = b"ticketmark-keyed-commitment/1\0"
REVEAL_BYTES = 64  # an Ed25519 signature


def context(scheme: str, nonce: str) -> bytes:
    """The signed message: the scheme and a per-claim nonce, so seeds never repeat."""
    if not scheme or "\0" in scheme or "\0" in nonce:
        raise TicketmarkError("a keyed secret needs a scheme name and a nonce without NUL")
    return DOMAIN + scheme.encode() + b"\0" + nonce.encode()


def reveal(key: Ed25519PrivateKey, scheme: str, nonce: str) -> bytes:
    """The owner's reveal token for (scheme, nonce): a deterministic Ed25519 signature."""
    return key.sign(context(scheme, nonce))


def seed_of(reveal_token: bytes) -> bytes:
    """The 32-byte seed a reveal opens."""
    return hashlib.sha256(SEED_DOMAIN + reveal_token).digest()


def commitment(seed: bytes) -> str:
    """What a claim publishes before the reveal (hex SHA-256; reveals nothing of the seed)."""
    return hashlib.sha256(COMMIT_DOMAIN + seed).hexdigest()


def open_reveal(public_key_b64: str, scheme: str, nonce: str, reveal_token: bytes,
                committed: str) -> bytes:
    """Check a reveal against a claim's key, context and commitment; return the seed.

    Raises a one-line ``TicketmarkError`` saying which check failed: a reveal made by
    another key, for another claim, or one that does not open this commitment.
    """
    if len(reveal_token) != REVEAL_BYTES:
        raise TicketmarkError(f"a reveal is a {REVEAL_BYTES}-byte signature, got "
                              f"{len(reveal_token)} bytes")
    try:
        public_key_from_b64(public_key_b64).verify(reveal_token, context(scheme, nonce))
    except (InvalidSignature, ValueError):
        raise TicketmarkError("the reveal is not a signature by the claim's key over the "
                              "claim's context (revealed by another key, or for another "
                              "claim)") from None
    seed = seed_of(reveal_token)
    if not hmac.compare_digest(commitment(seed), str(committed)):
        raise TicketmarkError("the revealed secret does not open the claim's commitment")
    return seed


def encode(token: bytes) -> str:
    return base64.b64encode(token).decode()


def decode(text: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise TicketmarkError("the reveal is not valid base64") from None
