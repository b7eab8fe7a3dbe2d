from __future__ import annotations

import pytest
import torch

from ticketmark.models import MODELS, build_model
from ticketmark.sparsity import PrunePolicy, prunable_names


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", [(1, 8), (3, 32)])
def test_every_model_runs_on_small_and_cifar_inputs(name, shape):
    c, s = shape
    model = build_model(name, c, 7, s).eval()
    out = model(torch.randn(2, c, s, s))
    assert out.shape == (2, 7)


def test_prunable_policy_excludes_stem_by_default():
    model = build_model("resnet20s", 3, 10, 32)
    names = prunable_names(model)
    assert "conv1.weight" not in names and "fc.weight" not in names
    assert names[0] == "layer1.0.conv1.weight"
    wide = prunable_names(model, PrunePolicy(include_stem=True, include_linear=True))
    assert wide[0] == "conv1.weight" and wide[-1] == "fc.weight"
    assert prunable_names(build_model("lenet300", 1, 10, 8))  # no convs: linear layers
