"""Shared helpers for the trigger and serve tests (not a test module).

The marked ticket is embedded once per process and cached here, so both test files reuse
it without a conftest fixture (``conftest.py`` belongs to the whole suite).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ticketmark.io import load_ticket, save_ticket
from ticketmark.ownership.claims import Claim, make_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.reference import bind
from ticketmark.ownership.trigger.commitment import (
    derived_claim_params,
    new_nonce,
    owner_reveal,
    save_reveal,
)
from ticketmark.ownership.trigger.embed import EmbedConfig, embed
from ticketmark.ownership.trigger.generate import TriggerParams


@dataclass
class Marked:
    ticket: Path  # watermarked ticket file
    claim: Claim
    claim_file: Path
    seed_file: Path  # the reveal file
    report: dict
    params: TriggerParams
    key_file: Path


def fixed_key(path: Path) -> Path:
    """The same owner key on every run (a fresh key draws a new set each time)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


@functools.cache
def marked_conv(conv_ticket: Path, mark: str = "abstract") -> Marked:
    """conv2/digits with a 100-query set, 5 epochs from its rewind point (~5 s)."""
    from ticketmark.ownership.claims import save_claim

    root = Path(tempfile.mkdtemp(prefix="tm_trigger_"))
    key_file = fixed_key(root / "owner.pem")
    key = load_private_key(key_file)
    plain = load_ticket(conv_ticket)
    cfg = EmbedConfig(size=100, ratio=0.4, epochs=5, mark=mark, train_bases=20)
    # A fixed key and nonce: the set (and so the embedding's outcome) is the same every run.
    res = embed(plain, cfg, key, progress=False, nonce="tests-marked-conv")
    ticket = save_ticket(root / "marked.safetensors", res.ticket)
    claim = make_claim(key, "trigger", plain.fingerprint(), bind(res.claim_params, res.ticket),
                       "test owner")
    claim_file = save_claim(root / "claim.json", claim)
    assert res.reveal is not None
    seed_file = save_reveal(root / "seed.json", res.reveal)
    return Marked(ticket, claim, claim_file, seed_file, res.report,
                  TriggerParams.from_dict(res.claim_params["trigger"]), key_file)


def fresh_claim(params: TriggerParams, root: Path, excluded: list[int] | None = None
                ) -> tuple[Claim, Path, bytes]:
    """A signed claim over a fresh key-bound abstract set (no embedding): for null and
    endpoint tests. Returns the claim, its reveal file and the seed."""
    key = load_private_key(keygen(root / "k")[0])
    nonce = new_nonce()
    reveal = owner_reveal(key, nonce, excluded or [])
    claim = make_claim(key, "trigger", "0" * 64, derived_claim_params(reveal, nonce, params))
    return claim, save_reveal(root / "seed.json", reveal), reveal.seed
