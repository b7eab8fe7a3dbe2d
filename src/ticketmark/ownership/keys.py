"""Owner identity: an Ed25519 key pair, the private half optionally passphrase-encrypted."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_bytes


def keygen(out: str | Path, passphrase: str | None = None, *,
           force: bool = False) -> tuple[Path, Path]:
    """Write ``OUT.pem`` (private) and ``OUT.pub`` (public); return both paths.

    An existing key is never replaced unless ``force``: a private key overwritten by
    mistake is gone, and with it every claim and trigger reveal derived from it.
    """
    out = Path(out)
    priv_path, pub_path = out.with_name(out.name + ".pem"), out.with_name(out.name + ".pub")
    if not force:
        for p in (priv_path, pub_path):
            if p.exists():
                raise TicketmarkError(f"{p} exists; overwriting a key loses it for good "
                                      "(keygen(..., force=True) replaces it)")
    key = Ed25519PrivateKey.generate()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption()
    )
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(priv_path, priv, secret=True)
    atomic_write_bytes(pub_path, pub)  # meant to be published
    return priv_path, pub_path


def load_private_key(path: str | Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no private key at {path}")
    try:
        key = serialization.load_pem_private_key(
            path.read_bytes(), passphrase.encode() if passphrase else None
        )
    except TypeError:
        raise TicketmarkError(f"{path} is encrypted: give its passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TicketmarkError(f"{path}: not an Ed25519 private key, or wrong passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TicketmarkError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    if not path.is_file():
        raise TicketmarkError(f"no public key at {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise TicketmarkError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TicketmarkError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The raw 32-byte public key, base64: the compact form stored in claims."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise TicketmarkError("claim holds a malformed public key") from None
