"""Stamped marks on real images: they verify, and they outlast a thief's fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.trigger_support import marked_conv
from ticketmark.attacks import thief_splits
from ticketmark.data import load_dataset
from ticketmark.io import load_ticket, save_ticket
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import OWNED, VerifyOptions


def test_patch_set_verifies_with_its_exact_test(conv_ticket):
    m = marked_conv(conv_ticket, "patch")
    assert m.params.mark == "patch" and m.params.n_groups == 20 and m.params.per_group == 5
    assert m.report["trigger_acc"] >= 95.0 and m.report["plain_trigger_acc"] < 40.0
    v = verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file))
    assert v.status == OWNED and v.p_value < 1e-15, v.reason
    plain = verify_claim(str(conv_ticket), m.claim, VerifyOptions(reveal=m.seed_file))
    assert plain.status != OWNED and plain.p_value > 1e-4


@pytest.mark.slow
def test_patch_set_survives_dense_adam_finetuning(conv_ticket, tmp_path):
    """Issue 16's attack: dense Adam (lr 1e-3) on the thief's half, here 3 epochs."""
    m = marked_conv(conv_ticket, "patch")
    ticket = load_ticket(m.ticket)
    model = copy.deepcopy(ticket.build()).train()
    thief = thief_splits(load_dataset("digits"), 0.5).train
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(thief), generator=gen).split(128):
            loss = F.cross_entropy(model(thief.x[idx]), thief.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    stolen = save_ticket(tmp_path / "stolen.safetensors", ticket.with_model(model.eval()))
    v = verify_claim(str(stolen), m.claim, VerifyOptions(reveal=m.seed_file))
    assert v.status == OWNED, v.reason
