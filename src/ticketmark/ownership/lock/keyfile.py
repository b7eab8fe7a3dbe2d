"""The owner's key file: what was cut from the ticket, optionally sealed to a passphrase.

Layout (all integers big-endian)::

    plain:     MAGIC | 0x00 | u64 payload length | payload | SHA-256(payload)
    encrypted: MAGIC | 0x01 | u8 log2(N) | u8 r | u8 p | u64 ciphertext length
               | 16-byte salt | 12-byte nonce | AES-256-GCM(payload)

The payload is a safetensors blob (never a pickle) whose metadata carries a JSON header.
The explicit lengths tell a truncated file apart from a wrong passphrase, and the header
of the encrypted form is authenticated as GCM associated data, so no field can be swapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_bytes
from ticketmark.io.untrusted import show

MAGIC = b"TMLOCK\x00\x01"
FORMAT = "ticketmark-lock/1"
SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P = 15, 8, 1  # 32 MiB, what ``seal`` writes
SCRYPT_MIN_LOG2N, SCRYPT_MAX_LOG2N = 10, 20
SCRYPT_MAX_MEMORY = 256 * 2**20  # bytes (128 * r * N)
SCRYPT_MAX_WORK = 8 * (1 << SCRYPT_LOG2N) * SCRYPT_R * SCRYPT_P  # N * r * p
_PLAIN_HEAD = struct.Struct(">Q")
_ENC_HEAD = struct.Struct(">BBBQ16s12s")


@dataclass
class LockKey:
    """Everything ``unlock`` needs to restore the original ticket bit for bit.

    ``removed``/``added``: per layer, flat indices into the weight. ``removed_values`` are
    the original trained weights there; ``added_values`` the original (pruned, so ±0.0)
    values where the lock added connections back, kept so even the sign of zero returns.
    """

    original_fingerprint: str
    locked_fingerprint: str
    model: str
    method: str
    params: dict[str, Any]
    removed: dict[str, torch.Tensor]
    removed_values: dict[str, torch.Tensor]
    added: dict[str, torch.Tensor] = field(default_factory=dict)
    added_values: dict[str, torch.Tensor] = field(default_factory=dict)
    connections: dict[str, torch.Tensor] = field(default_factory=dict)
    original_meta: dict[str, Any] = field(default_factory=dict)

    def removed_count(self) -> int:
        return int(sum(int(v.numel()) for v in self.removed.values()))

    def added_count(self) -> int:
        return int(sum(int(v.numel()) for v in self.added.values()))

    # (de)serialisation -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        tensors: dict[str, torch.Tensor] = {}
        groups = {"removed": self.removed, "removed_values": self.removed_values,
                  "added": self.added, "added_values": self.added_values,
                  "connections": self.connections}
        for group, mapping in groups.items():
            for name, t in mapping.items():
                tensors[f"{group}/{name}"] = t.detach().cpu().contiguous()
        header = {"format": FORMAT, "original_fingerprint": self.original_fingerprint,
                  "locked_fingerprint": self.locked_fingerprint, "model": self.model,
                  "method": self.method, "params": self.params,
                  "original_meta": self.original_meta, "layers": sorted(self.removed)}
        return save(tensors, metadata={"header": json.dumps(header, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> LockKey:
        try:
            tensors = dict(sorted(load(data).items()))  # load's order differs per process
            n = int.from_bytes(data[:8], "little")  # safetensors: u64 header size, JSON
            meta = json.loads(data[8 : 8 + n])["__metadata__"]
            header = json.loads(meta["header"])
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
        except (SafetensorError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise TicketmarkError(f"{source} is not a ticketmark lock key "
                                  f"({str(exc)[:200]})") from None
        if header.get("format") != FORMAT:
            raise TicketmarkError(f"{source} has format {show(header.get('format'))}, "
                                  f"expected {FORMAT!r}")

        def group(prefix: str) -> dict[str, torch.Tensor]:
            p = prefix + "/"
            return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}

        try:
            return cls(str(header["original_fingerprint"]), str(header["locked_fingerprint"]),
                       str(header["model"]), str(header["method"]), dict(header["params"]),
                       group("removed"), group("removed_values"), group("added"),
                       group("added_values"), group("connections"),
                       dict(header.get("original_meta") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise TicketmarkError(f"{source}: incomplete lock key header ({exc})") from None


def check_scrypt_cost(log2n: int, r: int, p: int, source: str) -> None:
    """Refuse scrypt parameters that cost more than a few times what ``seal`` writes.

    The header is read before the passphrase is checked, so a file may ask for any cost:
    log2 N = 22 with r = 8 needs 4 GiB and over a minute per passphrase try. Memory is
    128 * r * N bytes and work grows with N * r * p; both are capped.
    """
    memory, work = 128 * r * (1 << log2n), (1 << log2n) * r * p
    if not (SCRYPT_MIN_LOG2N <= log2n <= SCRYPT_MAX_LOG2N and 1 <= r <= 32 and 1 <= p <= 16) \
            or memory > SCRYPT_MAX_MEMORY or work > SCRYPT_MAX_WORK:
        raise TicketmarkError(
            f"{source} asks for scrypt cost log2(N)={log2n}, r={r}, p={p} "
            f"({memory / 2**20:.0f} MiB); refused: at most {SCRYPT_MAX_MEMORY >> 20} MiB and "
            f"{SCRYPT_MAX_WORK // ((1 << SCRYPT_LOG2N) * SCRYPT_R * SCRYPT_P)}x the default work")


def _derive(passphrase: str, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=1 << log2n, r=r, p=p).derive(passphrase.encode())


def seal(payload: bytes, passphrase: str | None) -> bytes:
    """Wrap a payload: checksummed when plain, scrypt + AES-256-GCM with a passphrase."""
    if passphrase is None:
        return MAGIC + b"\x00" + _PLAIN_HEAD.pack(len(payload)) + payload + \
            hashlib.sha256(payload).digest()
    if not passphrase:
        raise TicketmarkError("the passphrase is empty")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    key = _derive(passphrase, salt, SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P)
    length = len(payload) + 16  # GCM appends a 16-byte tag
    head = MAGIC + b"\x01" + _ENC_HEAD.pack(SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P, length, salt,
                                            nonce)
    return head + AESGCM(key).encrypt(nonce, payload, head)


def is_encrypted(data: bytes) -> bool:
    return data.startswith(MAGIC) and data[len(MAGIC) : len(MAGIC) + 1] == b"\x01"


def unseal(data: bytes, passphrase: str | None, source: str) -> bytes:
    """The payload of a key file; a clear error for every way it can be wrong."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 1:
        raise TicketmarkError(f"{source} is not a ticketmark lock key (bad magic)")
    mode, body = data[len(MAGIC)], data[len(MAGIC) + 1 :]
    if mode == 0:
        if len(body) < _PLAIN_HEAD.size:
            raise TicketmarkError(f"{source} is truncated")
        (length,) = _PLAIN_HEAD.unpack_from(body)
        payload = body[_PLAIN_HEAD.size : _PLAIN_HEAD.size + length]
        digest = body[_PLAIN_HEAD.size + length :]
        if len(payload) < length or len(digest) < 32:
            raise TicketmarkError(f"{source} is truncated ({len(data)} bytes, expected "
                                  f"{len(MAGIC) + 1 + _PLAIN_HEAD.size + length + 32})")
        if len(digest) > 32 or hashlib.sha256(payload).digest() != digest:
            raise TicketmarkError(f"{source} is corrupted (checksum mismatch)")
        return payload
    if mode != 1:
        raise TicketmarkError(f"{source} uses unknown key protection {mode}")
    if len(body) < _ENC_HEAD.size:
        raise TicketmarkError(f"{source} is truncated")
    log2n, r, p, length, salt, nonce = _ENC_HEAD.unpack_from(body)
    cipher = body[_ENC_HEAD.size :]
    if len(cipher) < length:
        raise TicketmarkError(f"{source} is truncated ({len(cipher)} of {length} encrypted "
                              "bytes)")
    if len(cipher) > length:
        raise TicketmarkError(f"{source} is corrupted (trailing bytes)")
    check_scrypt_cost(log2n, r, p, source)  # before asking for (or trying) a passphrase
    if not passphrase:
        raise TicketmarkError(f"{source} is encrypted; give its passphrase with "
                              "--passphrase-env VAR")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    head = data[: len(MAGIC) + 1 + _ENC_HEAD.size]
    try:
        return AESGCM(_derive(passphrase, salt, log2n, r, p)).decrypt(nonce, cipher, head)
    except InvalidTag:
        raise TicketmarkError(f"wrong passphrase for {source} (or the file was "
                              "altered)") from None


def write_key(path: str | Path, key: LockKey, passphrase: str | None = None) -> Path:
    atomic_write_bytes(path, seal(key.to_bytes(), passphrase), secret=True)
    return Path(path)


def read_key(path: str | Path, passphrase: str | None = None) -> LockKey:
    p = Path(path)
    if not p.is_file():
        raise TicketmarkError(f"no key file at {p}")
    return LockKey.from_bytes(unseal(p.read_bytes(), passphrase, str(p)), str(p))
