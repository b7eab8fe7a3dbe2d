"""Trigger embedding that holds in a neighbourhood of the weights, not only at them.

A thief who fine-tunes a stolen model moves every weight a little; with Adam every weight
moves by about the learning rate per step whatever its gradient, so weights that only the
trigger set uses drift as far as any other. A set that was trained at exactly the
released weights sits in a narrow basin and is gone after an epoch or two (issue 16: 7/100
matches after three epochs of dense Adam). Following "Towards Robust Model Watermark via
Reducing Parametric Vulnerability" (Gan et al., ICCV 2023), the trigger loss is minimised
at a *perturbed* copy of the weights instead: each step finds the weight perturbation,
within a ball of radius ``rho`` times each layer's norm, that hurts the trigger set most
(one gradient step, as in SAM/AWP), and takes the trigger gradient there. The set is then
learnt by a region of weights that a short fine-tune does not leave. The clean loss is
taken at the unperturbed weights, so the task is trained as before.

Each step draws the trigger rows for its batch itself (about ``share`` of the rows the
model sees), so the loop's clean batches and epochs stay those of the plain recipe.
``random`` perturbs in a random direction of the same size (a cheaper, weaker variant kept
for comparison), ``none`` is plain mixing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.errors import TicketmarkError

PERTURBATIONS = ("adversarial", "thief", "random", "none")


def check_settings(perturbation: str, rho: float, entangle: float) -> None:
    """One place for the hardening options' bounds (``EmbedConfig`` checks them early)."""
    if perturbation not in PERTURBATIONS:
        raise TicketmarkError(f"unknown trigger perturbation {perturbation!r} (one of "
                              f"{', '.join(PERTURBATIONS)})")
    if not (math.isfinite(rho) and 0.0 <= rho <= 1.0):
        raise TicketmarkError(f"trigger perturbation radius must be in [0, 1], got {rho}")
    if not (math.isfinite(entangle) and entangle >= 0.0):
        raise TicketmarkError(f"--entangle must be >= 0, got {entangle}")


@contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Batch statistics are used but running statistics left alone (momentum 0)."""
    saved = [(m, m.momentum) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


@contextmanager
def penultimate_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The input of the model's last linear layer (the features the classifier reads)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    found: list[torch.Tensor] = []
    if not linears:
        yield found
        return
    handle = linears[-1].register_forward_pre_hook(
        lambda _m, args: found.append(args[0].flatten(1)))
    try:
        yield found
    finally:
        handle.remove()


def entanglement(features: torch.Tensor, clean: int, y: torch.Tensor, yt: torch.Tensor
                 ) -> torch.Tensor:
    """Mean cosine distance of each trigger row's features to its label's clean centroid.

    After a clean fine-tune the model still reacts to the marks but mixes up which mark
    means which label (issue 16): the marked images' features sit off the class clusters,
    where the classifier's new weights are arbitrary. Pulling them into the cluster of
    their label (the entanglement of Jia et al., "Entangled Watermarks as a Defense against
    Model Extraction", 2021, here with centroids instead of the soft nearest-neighbour
    loss) lets the part of the classifier that clean data keeps in place answer them.
    Labels absent from the batch's clean rows add nothing.
    """
    f = F.normalize(features, dim=1)
    classes = int(max(int(y.max()), int(yt.max()))) + 1
    sums = torch.zeros(classes, f.shape[1], dtype=f.dtype, device=f.device)
    sums.index_add_(0, y, f[:clean])
    counts = torch.bincount(y, minlength=classes)
    centroid = F.normalize(sums, dim=1)
    present = counts[yt] > 0
    if not bool(present.any()):
        return f.sum() * 0.0
    cos = (f[clean:][present] * centroid[yt[present]]).sum(1)
    return (1.0 - cos).mean()


@dataclass
class HardenedTriggerStep:
    """A ``training.BatchStep``: clean rows at ``w``, trigger rows at ``w + eps``.

    ``trigger_x/y``: every trigger image trained on; ``share``: the share of trigger rows
    in the rows each step sees (the embedding's ``ratio``); ``rho``: the perturbation's
    size relative to each weight tensor's norm.
    """

    trigger_x: torch.Tensor
    trigger_y: torch.Tensor
    share: float
    rho: float = 0.05
    perturbation: str = "adversarial"
    seed: int = 0
    entangle: float = 0.0

    def __post_init__(self) -> None:
        check_settings(self.perturbation, self.rho, self.entangle)
        if len(self.trigger_x) == 0:
            raise TicketmarkError("every trigger group was excluded: nothing to embed")
        self._gen = torch.Generator().manual_seed(self.seed)

    def _draw(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        count = max(1, round(batch * self.share / (1.0 - self.share)))
        idx = torch.randint(len(self.trigger_x), (count,), generator=self._gen)
        return self.trigger_x[idx].to(device), self.trigger_y[idx].to(device)

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        xt, yt = self._draw(len(x), x.device)
        rows = len(x) + len(xt)
        with penultimate_features(net) as feats:
            logits = net(torch.cat([x, xt]))
        clean = F.cross_entropy(logits[:len(x)], y, reduction="sum") / rows
        marked = F.cross_entropy(logits[len(x):], yt, reduction="sum") / rows
        if self.entangle > 0.0 and feats:
            marked = marked + self.entangle * entanglement(feats[0], len(x), y, yt) \
                * len(xt) / rows
        if self.perturbation == "none" or self.rho == 0.0:
            (clean + marked).backward()
        else:
            weights = [p for p in net.parameters() if p.requires_grad and p.dim() > 1]
            direction: tuple[torch.Tensor, ...] = ()
            if self.perturbation == "adversarial":
                direction = torch.autograd.grad(marked, weights, retain_graph=True)
            elif self.perturbation == "random":
                direction = tuple(torch.randn(p.shape, generator=self._gen).to(p.device)
                                  for p in weights)
            clean.backward()
            with torch.no_grad():
                saved = [p.detach().clone() for p in weights]
                if self.perturbation == "thief":
                    # Adam-like: every weight moves by the same step down the clean loss.
                    eps = [-self.rho * p.pow(2).mean().sqrt() * torch.sign(p.grad)
                           if p.grad is not None else torch.zeros_like(p) for p in weights]
                else:
                    eps = [self.rho * p.norm() * d / d.norm().clamp_min(1e-12)
                           for p, d in zip(weights, direction, strict=True)]
                torch._foreach_add_(weights, eps)
            try:
                with frozen_batchnorm_stats(net):
                    far = net(xt)
                    (F.cross_entropy(far, yt, reduction="sum") / rows).backward()
            finally:
                with torch.no_grad():
                    torch._foreach_copy_(weights, saved)
        return (clean + marked).detach(), logits[:len(x)].detach()
