"""``find --method l0``: hard-concrete gates, the exact target sparsity, the run layout,
resuming, and bad knobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import one_line_error, run_cli


def test_hard_concrete_gates_and_their_smoothed_l0():
    from ticketmark.finding.l0 import Gates
    from ticketmark.sparsity import Mask

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40))
    mask = Mask({"0.weight": torch.rand(40, 50) > 0.25})
    for init in (-1.0, 0.5, 2.0):
        gates = Gates(model, mask, init)
        with torch.no_grad():
            draws = torch.stack([gates.sample()["0.weight"] for _ in range(200)])
        alive = mask["0.weight"]
        assert float(draws.min()) == 0.0 and float(draws.max()) == 1.0  # exact 0 and 1
        assert bool((draws[:, ~alive] == 0).all())  # pruned weights never come back
        # density() is P(z != 0) over the alive weights: matches the draws
        observed = float((draws[:, alive] > 0).float().mean())
        assert abs(float(gates.density().detach()) - observed) < 0.02, (init, observed)
    # the deterministic gate of an open log_alpha is 1, of a closed one 0
    gates = Gates(model, mask, 5.0)
    assert bool((gates.expected()["0.weight"][mask["0.weight"]] == 1).all())
    gates = Gates(model, mask, -5.0)
    assert float(gates.expected()["0.weight"].max()) == 0.0


def test_l0_finder_lands_on_the_target_and_resumes(tmp_path: Path):
    out = tmp_path / "run"
    flags = ("find", "--method", "l0", "--model", "conv2", "--dataset", "digits",
             "--sparsity", "0.8", "--epochs", "1", "--l0-epochs", "2", "--batch-size", "256",
             "-q")
    args = (*flags, "--out", out)
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    rows = json.loads((out / "summary.json").read_text())["rounds"]
    assert [r.get("phase") for r in rows] == [None, "mask", "retrain"]
    from ticketmark.io import load_ticket

    ticket = load_ticket(out)
    assert ticket.mask.count() == round(0.2 * ticket.mask.size())  # exactly the target
    learned = load_ticket(out / "round_1" / "ticket.safetensors")
    assert all(torch.equal(learned.mask[k], ticket.mask[k]) for k in ticket.mask)
    trace = learned.meta["l0"]["trace"]
    assert len(trace) == 2 and trace[-1]["expected_density"] < trace[0]["expected_density"]
    # the learned mask is not the magnitude mask of the same dense weights
    from ticketmark.sparsity import magnitude_prune

    dense = load_ticket(out / "round_0" / "ticket.safetensors")
    mag = magnitude_prune(dense.build(), dense.mask, 0.8)
    assert not all(torch.equal(mag[k], ticket.mask[k]) for k in mag)
    # a rerun with the same flags reads the finished rounds, retrains nothing
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("round_*/ticket.safetensors")}
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    line = one_line_error(run_cli(*flags, "--l0-lr", "0.5", "--out", out))
    assert "other settings" in line


@pytest.mark.parametrize(("flags", "words"), [
    (("--l0-lr", "0"), "--l0-lr"),
    (("--l0-adv", "-1"), "--l0-adv"),
    (("--l0-epochs", "0"), "--l0-epochs"),
    (("--l0-adv", "1", "--eps", "2"), "eps"),
])
def test_bad_l0_knobs_are_one_error_line_and_write_nothing(tmp_path: Path, flags, words):
    out = tmp_path / "run"
    line = one_line_error(run_cli("find", "--method", "l0", "--model", "conv2", "--dataset",
                                  "digits", "--out", out, *flags))
    assert words in line
    assert not out.exists()
