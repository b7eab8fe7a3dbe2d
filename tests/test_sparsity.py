from __future__ import annotations

import torch

from ticketmark.data import load_dataset
from ticketmark.models import build_model
from ticketmark.sparsity import Mask, magnitude_prune, prune_by_scores, random_prune
from ticketmark.training import TrainConfig, train


def test_global_magnitude_prune_removes_exact_count_of_smallest():
    model = build_model("conv2", 1, 10, 8)
    mask = Mask.ones(model)
    pruned = magnitude_prune(model, mask, 0.3)
    assert pruned.count() == mask.count() - round(0.3 * mask.count())
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].abs()[pruned[n]] for n in pruned])
    dropped = torch.cat([params[n].abs()[~pruned[n]] for n in pruned])
    assert kept.min() >= dropped.max()
    again = magnitude_prune(model, pruned, 0.5)
    assert again.count() == pruned.count() - round(0.5 * pruned.count())
    assert all(bool((again[n] <= pruned[n]).all()) for n in again)  # nested


def test_layerwise_and_random_prune_per_layer_counts():
    model = build_model("resnet20s", 1, 10, 8)
    mask = Mask.ones(model)
    for pruned in (magnitude_prune(model, mask, 0.6, scope="layer"), random_prune(mask, 0.6)):
        for n in mask:
            assert pruned.layer_counts()[n] == mask[n].numel() - round(0.6 * mask[n].numel())


def test_prune_by_scores_keeps_highest():
    mask = Mask({"w": torch.ones(10, dtype=torch.bool)})
    scores = {"w": torch.arange(10.0)}
    out = prune_by_scores(mask, scores, 0.3)
    assert out["w"].tolist() == [False] * 3 + [True] * 7


def test_pruned_weights_stay_exactly_zero_with_momentum_and_decay():
    data = load_dataset("digits")
    model = build_model("conv2", 1, 10, 8)
    mask = random_prune(Mask.ones(model), 0.7, seed=1)
    mask.apply(model)
    train(model, data, TrainConfig(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-3),
          mask, progress=False)
    params = dict(model.named_parameters())
    for n in mask:
        assert float(params[n].detach()[~mask[n]].abs().max()) == 0.0
        assert float(params[n].detach()[mask[n]].abs().sum()) > 0.0
