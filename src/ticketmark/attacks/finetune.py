"""Fine-tuning on the thief's own data: all layers, the last layer, or a re-initialised one.

The thief trains on ``data.train.part("thief", fraction)``, which is disjoint from the
owner's part, so a scheme that survives fine-tuning survives it without the owner's data.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ticketmark.attacks.common import check_data, clone_model, last_layer
from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.sparsity import Mask
from ticketmark.training import TrainConfig, train

FINETUNE_MODES = ("all", "last", "reinit-last")
# A tenth of the ResNet training rate: a thief who wants to keep the accuracy fine-tunes
# gently (fine-tuning at the full training rate is the re-training the owner already did).
DEFAULT_FINETUNE_LR = 0.01


def thief_splits(data: DataSplits, fraction: float, seed: int = 0) -> DataSplits:
    """The same dataset with its training split cut down to the thief's disjoint part."""
    return dataclasses.replace(data, train=data.train.part("thief", fraction, seed=seed))


def finetune(model: nn.Module, data: DataSplits, *, epochs: int = 5, lr: float | None = None,
             mode: str = "all", keep_mask: Mask | None = None, thief_fraction: float = 0.5,
             seed: int = 0, progress: bool = False, batch_size: int = 128,
             device: str = "auto", adversarial_eps: float = 0.0,
             adversarial_steps: int = 7) -> nn.Module:
    """Fine-tune a copy of ``model`` for ``epochs`` on the thief's part of ``data.train``.

    ``mode``: ``all`` trains every parameter; ``last`` only the classifier (BatchNorm
    statistics frozen too, so every other tensor is bit-identical); ``reinit-last``
    re-initialises the classifier, then trains everything (Adi et al.'s RTAL).
    ``keep_mask=None`` is dense fine-tuning (pruned weights may grow back); a ``Mask``
    keeps those weights at exactly zero. ``adversarial_eps`` > 0 (pixel units) makes it
    PGD adversarial fine-tuning: a thief hardening the stolen ticket.
    """
    if mode not in FINETUNE_MODES:
        raise TicketmarkError(f"unknown fine-tuning mode {mode!r}; choose one of: "
                              f"{', '.join(FINETUNE_MODES)}")
    if int(epochs) < 0:
        raise TicketmarkError(f"fine-tuning epochs must be >= 0, got {epochs}")
    out = clone_model(model)
    check_data(out, data)
    thief = thief_splits(data, thief_fraction, seed=0)
    head = last_layer(out)
    params: list[nn.Parameter] | None = None
    frozen_bn: list[tuple[nn.modules.batchnorm._BatchNorm, float | None]] = []
    if mode == "reinit-last":
        torch.manual_seed(int(seed))
        head.reset_parameters()
    elif mode == "last":
        params = list(head.parameters())
        head_ids = {id(p) for p in params}
        for p in out.parameters():  # no gradients for the frozen body: faster, and exact
            if id(p) not in head_ids:
                p.requires_grad_(False)
        for m in out.modules():  # momentum 0: running stats ignore the thief's batches
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                frozen_bn.append((m, m.momentum))
                m.momentum = 0.0
    cfg = TrainConfig(epochs=int(epochs), batch_size=batch_size,
                      lr=DEFAULT_FINETUNE_LR if lr is None else float(lr), seed=int(seed),
                      device=device,
                      adversarial=None if not adversarial_eps else
                      {"method": "pgd", "eps": float(adversarial_eps),
                       "steps": int(adversarial_steps)})
    try:
        train(out, thief, cfg, keep_mask, desc=f"finetune ({mode})", progress=progress,
              params=params)
    finally:
        for m, momentum in frozen_bn:
            m.momentum = momentum
        for p in out.parameters():
            p.requires_grad_(True)
    return out.cpu()
