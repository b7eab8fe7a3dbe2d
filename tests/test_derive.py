"""``derive``: copies made from a ticket are derived; unrelated models are not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import one_line_error, run_cli
from ticketmark.attacks import fill, noise, permute, prune, quantize
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.models import build_model
from ticketmark.ownership.derive import derive, permutation_z
from ticketmark.sparsity import Mask


def _stranger(ticket: Ticket, seed: int) -> Ticket:
    """Same architecture, fresh initialisation, random mask at the ticket's sparsity."""
    torch.manual_seed(seed)
    model = build_model(ticket.model_name, ticket.in_channels, ticket.num_classes,
                        ticket.image_size)
    g = torch.Generator().manual_seed(seed)
    mask = Mask({k: v.flatten()[torch.randperm(v.numel(), generator=g)].view_as(v)
                 for k, v in ticket.mask.items()})
    mask.apply(model)
    return Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                  ticket.image_size, state_of(model), mask, None, {})


@pytest.fixture(scope="module")
def owner(resnet_ticket) -> Ticket:
    return load_ticket(resnet_ticket)


ATTACKS = {  # the weight edits of ticketmark.attacks, without the thief's data (fast)
    "prune 50%": lambda m, names: prune(m, 0.5, names=names),
    "prune random 50%": lambda m, names: prune(m, 0.5, method="random", names=names),
    "ternary": lambda m, names: quantize(m, scheme="ternary"),
    "permute": lambda m, names: permute(m),
    "noise 0.2": lambda m, names: noise(m, 0.2),
    "fill 0.5": lambda m, names: fill(m, 0.5),
    "prune + permute": lambda m, names: permute(prune(m, 0.5, names=names), seed=3),
    "random 50% + permute": lambda m, names: permute(prune(m, 0.5, method="random",
                                                          names=names), seed=4),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacked_copies_are_derived(owner, attack):
    stolen = ATTACKS[attack](owner.build(), list(owner.mask))
    d = derive({k: v.detach() for k, v in stolen.state_dict().items()}, owner)
    assert d.derived and d.log10_p < -6, d.reason
    if "permute" in attack:
        assert sum(r.channels_moved for r in d.layers) > 0


def test_channel_rescaling_does_not_hide_derivation(owner):
    """Positive per-channel scaling (absorbed by BatchNorm) leaves every cosine unchanged."""
    g = torch.Generator().manual_seed(0)
    state = {k: (v * torch.exp(torch.randn(v.shape[0], generator=g)).view(-1, 1, 1, 1)
                 if v.dim() == 4 else v) for k, v in owner.state.items()}
    d = derive(state, owner)
    base = derive(owner.state, owner)
    assert d.derived
    for a, b in zip(d.layers, base.layers, strict=True):
        assert a.weight_cosine == pytest.approx(b.weight_cosine, abs=1e-9)


def test_unrelated_models_are_not_derived(owner):
    # Not seed 0: the owner was trained from seed 0's initialisation, and its rewind weights
    # still carry it (derive finds a stranger drawn from that seed: a shared init is shared).
    for seed in (101, 102, 103):
        d = derive(_stranger(owner, seed).state, owner)
        assert not d.derived and d.log10_p > -3, d.reason


def test_excluding_a_block_removes_it_from_the_evidence(owner):
    # A 3x3 conv: its units are kernels, so an 8 x 8 block is 64 of them.
    name = next(k for k, v in owner.state.items()
                if v.dim() == 4 and v.shape[0] >= 32 and v.shape[-1] == 3)
    block = np.zeros(tuple(owner.state[name].shape[:2]), dtype=bool)
    block[:8, :8] = True
    d = derive(owner.state, owner, exclude={name: block})
    row = next(r for r in d.layers if r.layer == name)
    full = next(r for r in derive(owner.state, owner).layers if r.layer == name)
    assert row.units == full.units - 64 and d.excluded == {name: 64}


def test_permutation_moments_match_simulation():
    """Hoeffding's exact mean and variance against 4000 random pairings."""
    rng = np.random.default_rng(0)
    s, r = rng.normal(size=(60, 9)), rng.normal(size=(60, 9)) + 0.3
    strata = rng.integers(0, 3, size=60)
    obs, mean, z = permutation_z(s, r, strata)
    sims = []
    for _ in range(4000):
        perm = np.arange(60)
        for g in range(3):
            idx = np.flatnonzero(strata == g)
            perm[idx] = rng.permutation(idx)
        sims.append(float(np.einsum("ij,ij->", s, r[perm])))
    assert mean == pytest.approx(np.mean(sims), abs=4 * np.std(sims) / np.sqrt(len(sims)))
    assert (obs - mean) / z == pytest.approx(np.std(sims), rel=0.05)


@pytest.mark.slow  # over 15 s on 2 cores; the default run stays under 10 min
def test_cli_derive(tmp_path, owner, resnet_ticket, conv_ticket):
    save_ticket(tmp_path / "stolen", owner.with_model(permute(owner.build())))
    res = run_cli("derive", "--suspect", tmp_path / "stolen.safetensors", "--reference",
                  resnet_ticket, "--report", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    assert "derivation: DERIVED" in res.stdout
    report = json.loads((tmp_path / "rep" / "derive.json").read_text())
    assert report["derived"] and report["log10_p"] < -6 and len(report["layers"]) > 10
    save_ticket(tmp_path / "stranger", _stranger(owner, 105))
    res = run_cli("derive", "--suspect", tmp_path / "stranger.safetensors", "--reference",
                  resnet_ticket)
    assert res.returncode == 1 and "NOT DERIVED" in res.stdout
    one_line_error(run_cli("derive", "--suspect", conv_ticket, "--reference", resnet_ticket))
    one_line_error(run_cli("derive", "--suspect", tmp_path / "none", "--reference",
                           resnet_ticket))


def test_derive_reads_every_suspect_format_verify_reads(tmp_path, owner, resnet_ticket):
    """A thief ships a plain state dict (keys prefixed) or a torch.save()d checkpoint, not
    a ticket: derive reads them as verify does."""
    from safetensors.torch import save_file

    stolen = permute(owner.build(), seed=2).state_dict()
    plain = tmp_path / "plain.safetensors"
    save_file({f"model.{k}": v.contiguous() for k, v in stolen.items()}, str(plain))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": stolen, "epoch": 3}, ckpt)
    for suspect in (plain, ckpt):
        res = run_cli("derive", "--suspect", suspect, "--reference", resnet_ticket)
        assert res.returncode == 0 and "derivation: DERIVED" in res.stdout, res.stdout
