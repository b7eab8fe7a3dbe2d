"""Projected gradient descent (Madry et al. 2018), L-infinity, in pixel units.

The attack works on normalised tensors but states its budget in [0, 1] pixel units (see
``pixels``): each step moves every pixel by ``alpha`` in the direction of the loss
gradient's sign, then projects back into the ``eps`` box around the clean image intersected
with the valid pixel range. The model is attacked in eval mode (BatchNorm uses its running
statistics, so crafting examples never changes them) and only the input gets gradients:
the model's ``.grad`` fields are left exactly as they were.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.robustness.pixels import PixelSpace


def default_alpha(eps: float, steps: int) -> float:
    """2.5 eps / steps: enough to cross the box from a random start (Madry et al.)."""
    return 2.5 * eps / max(1, steps)


def check_budget(eps: float, steps: int, alpha: float | None = None) -> None:
    if not 0.0 <= eps <= 1.0:
        raise TicketmarkError(f"eps is in [0, 1] pixel units, got {eps}")
    if steps < 0:
        raise TicketmarkError(f"PGD steps must be >= 0, got {steps}")
    if alpha is not None and alpha <= 0:
        raise TicketmarkError(f"PGD step size must be positive, got {alpha}")


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, space: PixelSpace, eps: float,
        steps: int, *, alpha: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial versions of the normalised images ``x`` (same shape, device and dtype)."""
    check_budget(eps, steps, alpha)
    x0 = x.detach()
    if eps == 0.0 or steps == 0:
        return x0.clone()
    step = alpha if alpha is not None else default_alpha(eps, steps)
    lo, hi = space.bounds(x0)
    e, a = space.scale(eps, x0), space.scale(step, x0)
    low, high = torch.maximum(x0 - e, lo), torch.minimum(x0 + e, hi)
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        xa = torch.minimum(torch.maximum(x0 + (2 * noise - 1) * e, low), high)
    else:
        xa = x0.clone()
    was_training = model.training
    model.eval()
    try:
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = F.cross_entropy(model(xa), y)
            (grad,) = torch.autograd.grad(loss, xa)
            xa = torch.minimum(torch.maximum(xa.detach() + a * grad.sign(), low), high)
    finally:
        model.train(was_training)
    return xa.detach()


def pgd_worst(model: nn.Module, x: torch.Tensor, y: torch.Tensor, space: PixelSpace,
              eps: float, steps: int, *, restarts: int = 1, alpha: float | None = None,
              seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """PGD with ``restarts`` random starts, keeping per image the first one that fools.

    Batched so evaluation on a whole test split stays in memory; seeded so a report can
    be reproduced exactly.
    """
    if restarts < 1:
        raise TicketmarkError(f"PGD restarts must be >= 1, got {restarts}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        best = xb.clone()
        fooled = torch.zeros(len(yb), dtype=torch.bool, device=device)
        for _ in range(restarts):
            xa = pgd(model, xb, yb, space, eps, steps, alpha=alpha, generator=gen)
            with torch.no_grad():
                wrong = _predict_eval(model, xa).argmax(1) != yb
            open_ = ~fooled  # images no earlier start fooled take this start's result
            best[open_] = xa[open_]
            fooled |= wrong
            if bool(fooled.all()):
                break
        outs.append(best.cpu())
    return torch.cat(outs) if outs else x.clone()


def _predict_eval(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was_training)
