from __future__ import annotations

import json

import pytest
import torch

from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket, save_ticket


def test_roundtrip_is_exact_and_keeps_forward_order(conv_ticket, tmp_path):
    t = load_ticket(conv_ticket)
    out = save_ticket(tmp_path / "copy", t)
    back = load_ticket(out)
    assert list(back.mask) == list(t.mask)
    # safetensors returns keys in a per-process hash order; the ticket restores the model's.
    model_order = list(t.build().state_dict())
    assert list(back.state) == list(t.state) == model_order
    assert back.rewind is None or list(back.rewind) == model_order
    assert all(torch.equal(back.state[k], t.state[k]) for k in t.state)
    assert back.fingerprint() == t.fingerprint()
    model = back.build()
    w = dict(model.named_parameters())
    assert all(float(w[n].detach()[~back.mask[n]].abs().max()) == 0 for n in back.mask)


def test_corrupt_and_mismatched_files_fail_clearly(conv_ticket, tmp_path):
    t = load_ticket(conv_ticket)
    path = save_ticket(tmp_path / "t", t)
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TicketmarkError, match="not a readable safetensors"):
        load_ticket(path)
    path = save_ticket(tmp_path / "t", t)
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["model"] = "resnet20s"
    side.write_text(json.dumps(meta))
    with pytest.raises(TicketmarkError, match="do not match"):
        load_ticket(path)
    with pytest.raises(TicketmarkError, match="no ticket"):
        load_ticket(tmp_path / "missing.safetensors")


def test_resaved_ticket_reports_its_own_sparsity(conv_ticket, tmp_path):
    from ticketmark.sparsity import random_prune

    t = load_ticket(conv_ticket)
    sparser = random_prune(t.mask, 0.5, seed=3)
    model = t.build()
    sparser.apply(model)
    path = save_ticket(tmp_path / "sparser", t.with_model(model, mask=sparser))
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["sparsity"] == pytest.approx(sparser.sparsity())
    assert side["fingerprint"] == load_ticket(path).fingerprint()


def test_keygen_keeps_the_private_key_private_and_the_public_one_readable(tmp_path):
    from ticketmark.ownership.keys import keygen, load_private_key

    pem, pub = keygen(tmp_path / "owner", passphrase="s3cret")
    assert pem.stat().st_mode & 0o777 == 0o600
    assert pub.stat().st_mode & 0o777 == 0o644
    assert b"ENCRYPTED" in pem.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    assert load_private_key(pem, "s3cret") is not None
