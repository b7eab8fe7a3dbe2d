"""Further pruning of a stolen ticket: magnitude (global / per layer) or random.

``ratio`` is a fraction of the weights that are still non-zero, as in IMP, so pruning a
ticket that is already 80% sparse by 0.5 leaves it 90% sparse. Counts are exact: the
shared pruners remove ``round(ratio * remaining)`` weights.
"""

from __future__ import annotations

from torch import nn

from ticketmark.attacks.common import check_fraction, clone_model, resolve_names
from ticketmark.errors import TicketmarkError
from ticketmark.sparsity import Mask, magnitude_prune, random_prune

PRUNE_METHODS = ("global", "layer", "random")


def prune(model: nn.Module, ratio: float, *, method: str = "global",
          names: list[str] | None = None, seed: int = 0) -> nn.Module:
    """Remove ``ratio`` of the remaining weights of ``names`` (default: the prunable layers).

    ``global`` ranks magnitudes across all layers at once, ``layer`` removes the same
    fraction from each layer, ``random`` removes a random ``ratio`` from each layer.
    """
    ratio = check_fraction(ratio, "prune ratio")
    if method not in PRUNE_METHODS:
        raise TicketmarkError(f"unknown prune method {method!r}; choose one of: "
                              f"{', '.join(PRUNE_METHODS)}")
    out = clone_model(model)
    names = resolve_names(out, names, default="prunable")
    alive = Mask.from_weights(out, names)
    if method == "random":
        new = random_prune(alive, ratio, seed=seed, scope="layer")
    else:
        new = magnitude_prune(out, alive, ratio, scope=method)
    new.apply(out)
    return out
