"""Masks over prunable weights: the ticket's topology, and every way to cut it."""

from ticketmark.sparsity.mask import Mask
from ticketmark.sparsity.prunable import PrunePolicy, prunable_names
from ticketmark.sparsity.pruning import magnitude_prune, prune_by_scores, random_prune

__all__ = [
    "Mask",
    "PrunePolicy",
    "magnitude_prune",
    "prunable_names",
    "prune_by_scores",
    "random_prune",
]
