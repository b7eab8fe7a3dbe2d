"""The hardened trigger step (ownership/trigger/hardening.py): exact where it should be
plain mixing, perturbed only for the trigger rows, and leaving the model as it found it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.ownership.trigger.hardening import HardenedTriggerStep


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(8, 1, 6, 6, generator=g), torch.randint(3, (8,), generator=g),
            torch.randn(5, 1, 6, 6, generator=g), torch.randint(3, (5,), generator=g))


def _grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("perturbation,rho", [("none", 0.05), ("adversarial", 0.0)])
def test_without_a_perturbation_it_is_cross_entropy_on_the_mixed_batch(perturbation, rho):
    x, y, tx, ty = _data()
    net, ref = _net(), _net()
    step = HardenedTriggerStep(tx, ty, share=0.5, rho=rho, perturbation=perturbation, seed=3)
    loss, logits = step(net.train(), x, y)
    # the rows the step drew, replayed with the same generator
    idx = torch.randint(len(tx), (8,), generator=torch.Generator().manual_seed(3))
    expected = F.cross_entropy(ref.train()(torch.cat([x, tx[idx]])), torch.cat([y, ty[idx]]))
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logits.shape == (8, 3)
    for a, b in zip(_grads(net), _grads(ref), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("perturbation", ["adversarial", "thief", "random"])
def test_perturbed_step_restores_weights_and_running_stats(perturbation):
    x, y, tx, ty = _data()
    net = _net().train()
    before = copy.deepcopy(net.state_dict())
    plain = _net().train()
    HardenedTriggerStep(tx, ty, 0.5, 0.0, "none", seed=3)(plain, x, y)
    HardenedTriggerStep(tx, ty, 0.5, 0.2, perturbation, seed=3)(net, x, y)
    after = net.state_dict()
    for name in before:
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(before[name], after[name]), name  # weights back bit for bit
    # running statistics moved exactly as one ordinary pass over the mixed batch moves them
    torch.testing.assert_close(after["1.running_mean"], plain.state_dict()["1.running_mean"])
    torch.testing.assert_close(after["1.running_var"], plain.state_dict()["1.running_var"])


def test_perturbation_changes_only_the_trigger_gradient():
    x, y, tx, ty = _data()
    flat, hard = _net().train(), _net().train()
    HardenedTriggerStep(tx, ty, 0.5, 0.0, "none", seed=3)(flat, x, y)
    HardenedTriggerStep(tx, ty, 0.5, 0.3, "adversarial", seed=3)(hard, x, y)
    moved = [not torch.allclose(a, b) for a, b in zip(_grads(flat), _grads(hard), strict=True)]
    assert any(moved)


def test_bad_settings_are_one_clear_error():
    _, _, tx, ty = _data()
    with pytest.raises(TicketmarkError, match="perturbation"):
        HardenedTriggerStep(tx, ty, 0.5, 0.1, "sideways")
    with pytest.raises(TicketmarkError, match="radius"):
        HardenedTriggerStep(tx, ty, 0.5, float("nan"), "adversarial")
    with pytest.raises(TicketmarkError, match="excluded"):
        HardenedTriggerStep(tx[:0], ty[:0], 0.5, 0.1, "adversarial")


def test_entanglement_measures_distance_to_the_label_centroid():
    from ticketmark.ownership.trigger.hardening import entanglement

    clean = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1])
    inside = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # on the centroids of labels 0 and 1
    opposite = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    yt = torch.tensor([0, 1])
    assert entanglement(torch.cat([clean, inside]), 3, y, yt).item() == pytest.approx(0.0)
    assert entanglement(torch.cat([clean, opposite]), 3, y, yt).item() == pytest.approx(2.0)
    # a trigger label no clean row of the batch carries adds nothing
    assert entanglement(torch.cat([clean, inside[:1]]), 3, y,
                        torch.tensor([2])).item() == 0.0


def test_entangled_step_pulls_marked_features_toward_their_class():
    x, y, tx, ty = _data()
    net = _net().train()
    step = HardenedTriggerStep(tx, ty, 0.5, 0.0, "none", seed=3, entangle=1.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    from ticketmark.ownership.trigger.hardening import entanglement, penultimate_features

    def distance() -> float:
        with torch.no_grad(), penultimate_features(net) as feats:
            net(torch.cat([x, tx]))
        return entanglement(feats[0], len(x), y, ty).item()

    before = distance()
    for _ in range(30):
        opt.zero_grad()
        step(net, x, y)
        opt.step()
    assert distance() < before


def test_cli_refuses_a_negative_entanglement_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ticketmark", "trigger", "embed", "--ticket",
                          str(tmp_path / "t.safetensors"), "--key", str(tmp_path / "k.pem"),
                          "--out", str(tmp_path / "o"), "--entangle", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--entangle must be >= 0" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
