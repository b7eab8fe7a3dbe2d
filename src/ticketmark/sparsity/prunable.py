"""Which weights a mask covers: by default every Conv2d except the stem, as in the paper."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class PrunePolicy:
    include_stem: bool = False
    include_linear: bool = False


def prunable_names(model: nn.Module, policy: PrunePolicy = PrunePolicy()) -> list[str]:
    """Weight parameter names in forward-definition order.

    A model without convolutions (LeNet) has nothing to prune under the conv-only default,
    so its Linear layers become prunable, as in the LTH paper.
    """
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = convs if policy.include_stem else convs[1:]
    if policy.include_linear or not convs:
        names = names + linears
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return [f"{n}.weight" for n in sorted(names, key=order.__getitem__)]
