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
from ticketmark.ownership.trigger.commitment import save_seed, secret_hash
from ticketmark.ownership.trigger.embed import EmbedConfig, claim_params, embed
from ticketmark.ownership.trigger.generate import TriggerParams, random_seed


@dataclass
class Marked:
    ticket: Path  # watermarked ticket file
    claim: Claim
    claim_file: Path
    seed_file: Path
    report: dict
    params: TriggerParams
    key_file: Path


@functools.cache
def marked_conv(conv_ticket: Path) -> Marked:
    """conv2/digits with a 100-trigger set, 5 epochs from its rewind point (~5 s)."""
    from ticketmark.ownership.claims import save_claim

    root = Path(tempfile.mkdtemp(prefix="tm_trigger_"))
    key_file = keygen(root / "owner")[0]
    key = load_private_key(key_file)
    plain = load_ticket(conv_ticket)
    seed = random_seed()
    res = embed(plain, EmbedConfig(size=100, ratio=0.4, epochs=5), seed=seed, progress=False)
    ticket = save_ticket(root / "marked.safetensors", res.ticket)
    claim = make_claim(key, "trigger", plain.fingerprint(), res.claim_params, "test owner")
    claim_file = save_claim(root / "claim.json", claim)
    seed_file = save_seed(root / "seed.json", seed, res.trigger.excluded())
    return Marked(ticket, claim, claim_file, seed_file, res.report,
                  TriggerParams.from_dict(res.claim_params["trigger"]), key_file)


def fresh_claim(params: TriggerParams, root: Path, excluded: list[int] | None = None
                ) -> tuple[Claim, Path, bytes]:
    """A signed claim over a fresh random seed (no embedding): for null and endpoint tests."""
    key = load_private_key(keygen(root / "k")[0])
    seed = random_seed()
    cp = claim_params("derived", secret_hash(seed), params, excluded or [])
    claim = make_claim(key, "trigger", "0" * 64, cp)
    return claim, save_seed(root / "seed.json", seed, excluded or []), seed
