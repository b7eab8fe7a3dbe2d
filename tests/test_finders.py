"""Early-bird and COLT: the stop rule, the overlap, both finders end to end, and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ticketmark.errors import TicketmarkError
from ticketmark.finding import FindConfig
from ticketmark.finding.colt import intersection, overlap, run_colt, split_data, target_keep
from ticketmark.finding.early_bird import (
    EarlyBirdOptions,
    MaskDistanceStop,
    channel_mask,
    draw_mask,
    hamming,
    run_early_bird,
)
from ticketmark.io import load_ticket
from ticketmark.models import build_model
from ticketmark.sparsity import Mask
from ticketmark.training import TrainConfig


def _bits(n: int, on: list[int]) -> torch.Tensor:
    b = torch.zeros(n, dtype=torch.bool)
    b[on] = True
    return b


# --------------------------------------------------------------------------------------------
# the stop rule
# --------------------------------------------------------------------------------------------
def test_hamming_is_the_fraction_of_differing_positions():
    assert hamming(_bits(10, [0, 1]), _bits(10, [0, 1])) == 0.0
    assert hamming(_bits(10, [0, 1]), _bits(10, [1, 2])) == pytest.approx(0.2)
    assert hamming(_bits(4, []), _bits(4, [0, 1, 2, 3])) == 1.0


def test_converging_mask_sequence_stops_once_the_window_is_full_and_close():
    stop = MaskDistanceStop(epsilon=0.1, window=3)
    n = 100
    # 40 flips, 20, 5, then the mask settles (flips below 10 positions = 0.1).
    seq = [_bits(n, list(range(0, 50))), _bits(n, list(range(20, 70))),
           _bits(n, list(range(30, 80))), _bits(n, list(range(32, 82))),
           _bits(n, list(range(33, 83))), _bits(n, list(range(33, 83)))]
    answers = [stop.update(b) for b in seq]
    # check 3 is 0.02 from check 2 but 0.24 from check 1, still in the window; check 4 is
    # 0.06 and 0.02 from checks 2 and 3: the first stop.
    assert answers == [False, False, False, False, True, True]
    assert stop.history[3] == pytest.approx(0.24) and stop.history[4] == pytest.approx(0.06)
    assert stop.history[0] is None and stop.history[1] == pytest.approx(0.4)


def test_slow_steady_drift_does_not_stop_even_if_each_step_is_small():
    stop = MaskDistanceStop(epsilon=0.1, window=5)
    n = 200
    # consecutive masks differ in 6 of 200 positions (0.03), 4 checks apart in 24 (0.12)
    answers = [stop.update(_bits(n, list(range(3 * k, 3 * k + 50)))) for k in range(30)]
    assert not any(answers)
    assert stop.history[1] == pytest.approx(0.03) and stop.history[-1] == pytest.approx(0.12)


def test_non_converging_sequence_never_stops():
    gen = torch.Generator().manual_seed(0)
    stop = MaskDistanceStop(epsilon=0.1, window=5)
    assert not any(stop.update(torch.rand(1000, generator=gen) < 0.2) for _ in range(200))


def test_stop_rule_rejects_bad_settings():
    with pytest.raises(TicketmarkError, match="epsilon"):
        MaskDistanceStop(epsilon=0.0)
    with pytest.raises(TicketmarkError, match="window"):
        MaskDistanceStop(window=1)


# --------------------------------------------------------------------------------------------
# early-bird end to end
# --------------------------------------------------------------------------------------------
def _eb_cfg(**extra) -> FindConfig:
    return FindConfig(method="early-bird", model="lenet300", dataset="digits", sparsity=0.8,
                      rewind_epoch=1, extra=extra, train=TrainConfig(epochs=2, batch_size=64))


def test_early_bird_stops_early_and_retrains_the_drawn_mask(tmp_path):
    cfg = _eb_cfg(window=2, epsilon=0.5, max_search_epochs=8)
    ticket = run_early_bird(cfg, tmp_path, progress=False)
    search = load_ticket(tmp_path / "round_0")
    info = search.meta["search"]
    assert info["converged"] and info["epochs_spent"] == 2.0  # first full window of 2
    rows = json.loads((tmp_path / "summary.json").read_text())["rounds"]
    assert [r["phase"] for r in rows] == ["search", "retrain"]
    assert rows[0]["epochs"] == 2.0 and rows[1]["epochs"] == 2
    assert ticket.mask.sparsity() == pytest.approx(0.8, abs=1e-5)
    drawn, _ = draw_mask(search.build(), cfg, EarlyBirdOptions.from_config(cfg))
    assert all(torch.equal(drawn[n], ticket.mask[n]) for n in drawn)
    assert all(torch.equal(ticket.rewind[k], search.rewind[k]) for k in search.rewind)
    assert len((tmp_path / "round_0" / "metrics.jsonl").read_text().splitlines()) == 2


def test_early_bird_without_convergence_runs_to_the_cap(tmp_path):
    cfg = _eb_cfg(window=5, epsilon=1e-6, max_search_epochs=3)
    run_early_bird(cfg, tmp_path, progress=False)
    info = load_ticket(tmp_path / "round_0").meta["search"]
    assert not info["converged"] and info["epochs_spent"] == 3.0
    assert len(info["trace"]) == 3


def test_early_bird_checks_every_k_steps_and_stops_inside_an_epoch(tmp_path, digits):
    cfg = _eb_cfg(window=2, epsilon=0.9, check_unit="step", check_every=5,
                  max_search_epochs=6)
    run_early_bird(cfg, tmp_path, progress=False)
    info = load_ticket(tmp_path / "round_0").meta["search"]
    # The rewind point is the end of epoch 1, so the first allowed stop is the first check
    # in epoch 2, though the window was full and close long before.
    per_epoch = math.ceil(len(digits.train) / 64)
    first = (per_epoch // 5 + 1) * 5
    assert info["converged"] and info["stopped_at"] == {"epoch": 2, "step": first}
    assert info["epochs_spent"] == pytest.approx(first / per_epoch)
    assert info["trace"][1]["distance"] < 0.9  # converged at step 10, inside epoch 1


def test_structured_mask_prunes_whole_channels_scored_by_batchnorm():
    torch.manual_seed(0)
    model = build_model("resnet20s", 1, 10, 8)
    base = Mask.ones(model)
    mask, keep = channel_mask(model, base, 0.5, "auto")
    for n in mask:
        rows = mask[n].flatten(1)
        assert bool((rows.all(1) | ~rows.any(1)).all()), f"{n} has partial channels"
        assert rows.any(1).any(), f"{n} lost every channel"
    assert 0.45 < mask.sparsity() <= 0.5
    assert len(keep) == sum(base[n].shape[0] for n in base)
    # Zeroing one conv's BN gamma makes its channel the first to go.
    with torch.no_grad():
        model.layer1[0].bn1.weight.fill_(1.0)
        model.layer1[0].bn1.weight[3] = 0.0
    mask, _ = channel_mask(model, base, 0.01, "bn")
    assert not mask["layer1.0.conv1.weight"][3].any()


def test_structured_mask_never_prunes_the_logits():
    torch.manual_seed(0)
    model = build_model("lenet300", 1, 10, 8)
    base = Mask.ones(model)
    mask, _ = channel_mask(model, base, 0.8, "l1")
    assert mask[list(base)[-1]].all()
    assert 0.75 < mask.sparsity() <= 0.8
    with pytest.raises(TicketmarkError, match="BatchNorm"):
        channel_mask(model, base, 0.5, "bn")


def test_l1_channel_scores_ignore_each_layers_scale():
    """Rescaling one layer (a ReLU net computes the same function up to the next layer's
    compensation) must not move channels between layers; raw mean |w| did, and emptied
    conv4's last conv."""
    torch.manual_seed(0)
    model = build_model("conv4", 1, 10, 8)
    base = Mask.ones(model)
    before, _ = channel_mask(model, base, 0.75, "l1")
    with torch.no_grad():
        model[0].weight.mul_(100.0)  # the first conv, fan-in 9: already the largest weights
        model[7].weight.mul_(0.01)  # the last conv, fan-in 1152: already the smallest
    after, _ = channel_mask(model, base, 0.75, "l1")
    for n in base:
        assert torch.equal(before[n], after[n]), f"{n} changed with its layer's scale"


def test_structured_conv4_keeps_every_layer_alive_and_trains():
    """75% structured on conv4 (no BatchNorm, l1): every layer keeps a real share of its
    channels and the pruned network still learns a small batch."""
    torch.manual_seed(0)
    model = build_model("conv4", 1, 10, 8)
    base = Mask.ones(model)
    mask, _ = channel_mask(model, base, 0.75, "l1")
    assert 0.7 < mask.sparsity() <= 0.75
    for n in base:
        kept = float(mask[n].flatten(1).any(1).float().mean())
        assert kept >= 0.1, f"{n} keeps only {kept:.1%} of its channels"
    # Floor binds when the scores say otherwise: zero a layer and it keeps exactly 10%.
    with torch.no_grad():
        model[7].weight[3:].zero_()
    floored, _ = channel_mask(model, base, 0.75, "l1", min_keep=0.1)
    assert int(floored["7.weight"].flatten(1).any(1).sum()) == 13  # ceil(0.1 * 128)
    torch.manual_seed(0)
    model = build_model("conv4", 1, 10, 8)
    mask.apply(model)
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        mask.apply(model)
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::5]  # measured 2.33 -> 0.10


# --------------------------------------------------------------------------------------------
# COLT: the overlap
# --------------------------------------------------------------------------------------------
def _mask(bits: list[int]) -> Mask:
    t = torch.tensor(bits, dtype=torch.bool)
    return Mask({"a.weight": t[:4].view(2, 2), "b.weight": t[4:]})


SCORES = {"a.weight": torch.tensor([[0.1, 0.9], [0.5, 0.3]]),
          "b.weight": torch.tensor([0.8, 0.2, 0.7, 0.4])}


def _set(m: Mask) -> set[int]:
    return set(torch.cat([m[n].flatten() for n in m]).nonzero().flatten().tolist())


def test_overlap_is_exactly_the_intersection_at_the_target_count():
    current = _mask([1, 1, 1, 1, 1, 1, 1, 1])
    a = _mask([1, 1, 0, 1, 1, 0, 1, 0])
    b = _mask([0, 1, 1, 1, 1, 1, 1, 0])
    inter = _set(a) & _set(b)
    assert _set(intersection([a, b])) == inter == {1, 3, 4, 6}
    assert _set(overlap([a, b], current, SCORES, keep=4)) == inter
    assert _set(overlap([a, b], current, SCORES)) == inter


def test_overlap_fills_back_by_score_when_the_intersection_is_too_small():
    current = _mask([1, 1, 1, 1, 1, 1, 0, 1])
    a = _mask([1, 1, 0, 0, 1, 0, 0, 1])
    b = _mask([0, 1, 1, 0, 0, 1, 0, 1])  # intersection {1, 7}
    out = overlap([a, b], current, SCORES, keep=4)
    # fill from current \ intersection = {0, 2, 3, 4, 5} by score: 4 (0.8), 2 (0.5)
    assert _set(out) == {1, 7, 4, 2}
    assert _set(out) <= _set(current)


def test_overlap_trims_by_score_when_the_intersection_is_too_large():
    current = _mask([1, 1, 1, 1, 1, 1, 1, 1])
    a = _mask([1, 1, 1, 1, 1, 1, 0, 0])
    out = overlap([a, a], current, SCORES, keep=3)
    assert _set(out) == {1, 4, 2}  # the three best of {0..5}
    with pytest.raises(TicketmarkError):
        overlap([a, a], current, SCORES, keep=9)


def test_data_splits_are_disjoint_and_cover_the_training_set(digits):
    parts = split_data(digits, 3, seed=0)
    rows = torch.cat([p.train.x.flatten(1) for p in parts])
    assert len(rows) == len(digits.train)
    assert max(len(p.train) for p in parts) - min(len(p.train) for p in parts) <= 1
    assert torch.unique(rows, dim=0).shape[0] == torch.unique(digits.train.x.flatten(1),
                                                              dim=0).shape[0]


def test_colt_cycles_keep_the_overlap_and_land_exactly_on_the_target(tmp_path):
    cfg = FindConfig(method="colt", model="lenet300", dataset="digits", sparsity=0.7,
                     rate=0.3, rewind_epoch=1, extra={"splits": 2},
                     train=TrainConfig(epochs=2, batch_size=64))
    ticket = run_colt(cfg, tmp_path, progress=False)
    goal = target_keep(ticket.mask, 0.7)
    assert ticket.mask.count() == goal
    rows = json.loads((tmp_path / "summary.json").read_text())["rounds"]
    cycles = [r["round"] for r in rows if r["phase"] == "cycle"]
    assert rows[-1]["phase"] == "retrain" and len(cycles) >= 2
    previous = load_ticket(tmp_path / "round_0").mask
    for r in cycles:
        kept = load_ticket(tmp_path / f"round_{r}").mask
        copies = [load_ticket(tmp_path / f"round_{r}" / f"copy_{i}").mask for i in range(2)]
        inter = _set(intersection(copies))
        assert _set(copies[0]) != _set(copies[1])  # the two halves of the data disagree
        if r != cycles[-1]:
            assert _set(kept) == inter  # exactly the overlap
        else:
            assert inter <= _set(kept) <= _set(previous)  # the overlap, filled back to target
            assert kept.count() == goal
        previous = kept
    assert _set(ticket.mask) == _set(previous)


# --------------------------------------------------------------------------------------------
# resume under torchrun after a real kill
# --------------------------------------------------------------------------------------------
def _torchrun() -> str:
    local = Path(sys.executable).with_name("torchrun")
    return str(local) if local.exists() else "torchrun"


def _launch(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([_torchrun(), "--standalone", "--nproc_per_node=2", "-m",
                             "ticketmark", "find", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["colt", "imp", "early-bird"])
def test_torchrun_two_cpu_ranks_resume_after_a_kill(tmp_path, method):
    out = tmp_path / "run"
    common = ["--model", "lenet300", "--dataset", "digits", "--out", str(out), "-q",
              "--rewind-epoch", "1", "--method", method]
    extra = {"colt": ["--sparsity", "0.9", "--rate", "0.3", "--epochs", "6"],
             "imp": ["--rounds", "4", "--epochs", "6"],
             "early-bird": ["--window", "2", "--epsilon", "0.5", "--epochs", "150"]}[method]
    first = "round_1" if method != "early-bird" else "round_0"
    proc = _launch(common + extra)
    try:
        end = time.time() + 240
        while not (out / first / "ticket.json").exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < end, "no round was saved"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the agent and both ranks, mid-run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    saved = sorted(p for p in out.glob("round_*/**/ticket.*"))
    before = {p: p.read_bytes() for p in saved}
    again = _launch(common + extra)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert all(p.read_bytes() == data for p, data in before.items())  # earlier rounds kept
    rows = json.loads((out / "summary.json").read_text())["rounds"]
    ticket = load_ticket(out)
    assert rows[-1]["sparsity"] == pytest.approx(ticket.mask.sparsity())
    if method == "colt":
        assert ticket.mask.count() == target_keep(ticket.mask, 0.9)
    assert rows[-1]["test_acc"] > 60.0
