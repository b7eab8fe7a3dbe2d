"""Weight noise: Gaussian noise on surviving weights, and noise written into pruned ones.

``fill`` is the attack on mask-based credentials: after it no weight is exactly zero, so
the mask can no longer be read off the zeros, while the model computes almost the same
function.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketmark.attacks.common import check_nonnegative, clone_model, resolve_names
from ticketmark.errors import TicketmarkError

FILL_REFERENCES = ("min", "std")


def _gaussian(shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen)


@torch.no_grad()
def noise(model: nn.Module, sigma: float = 0.01, *, seed: int = 0,
          names: list[str] | None = None) -> nn.Module:
    """Add N(0, (sigma * std)^2) to every non-zero weight, std = that layer's weight std.

    The std is taken over the surviving weights, so ``sigma`` means the same thing for a
    dense and a 90%-sparse layer; pruned weights stay exactly zero.
    """
    sigma = check_nonnegative(sigma, "noise sigma")
    out = clone_model(model)
    params = dict(out.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    for n in resolve_names(out, names):
        w = params[n]
        alive = w != 0
        if int(alive.sum()) < 2:
            continue
        std = w[alive].float().std()
        w.add_((_gaussian(w.shape, gen) * sigma * std).to(w.dtype) * alive)
    return out


@torch.no_grad()
def fill(model: nn.Module, scale: float = 0.01, *, seed: int = 0,
         names: list[str] | None = None, reference: str = "min") -> nn.Module:
    """Write N(0, (scale * ref)^2) into every exactly-zero weight; none stays zero.

    ``reference="min"`` (default): ref is the layer's smallest surviving |w|, so filled
    values stay far below every real weight and accuracy is untouched; ``"std"``: ref is
    the surviving weights' std, which lets filled values mix with small real weights (a
    harder case for anyone recovering the mask by magnitude).
    """
    scale = check_nonnegative(scale, "fill scale")
    if scale == 0:
        raise TicketmarkError("fill scale must be > 0 (0 would leave the zeros in place)")
    if reference not in FILL_REFERENCES:
        raise TicketmarkError(f"unknown fill reference {reference!r}; choose one of: "
                              f"{', '.join(FILL_REFERENCES)}")
    out = clone_model(model)
    params = dict(out.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    chosen = resolve_names(out, names)
    # A layer pruned to nothing has no reference of its own: borrow the smallest one.
    refs: dict[str, float] = {}
    for n in chosen:
        alive = params[n][params[n] != 0].float().abs()
        if alive.numel() >= 2:
            refs[n] = float(alive.min() if reference == "min" else alive.std())
        elif alive.numel() == 1:
            refs[n] = float(alive[0])
    fallback = min(refs.values(), default=1e-3)
    for n in chosen:
        w = params[n]
        dead = w == 0
        if not bool(dead.any()):
            continue
        ref = refs.get(n, fallback) or fallback
        values = _gaussian(w.shape, gen) * (scale * ref)
        # randn can return exactly 0 (and tiny values can underflow): nudge those.
        values = values.to(w.dtype)
        values = torch.where(values == 0, torch.full_like(values, torch.finfo(w.dtype).tiny),
                             values)
        w.copy_(torch.where(dead, values, w))
    return out
