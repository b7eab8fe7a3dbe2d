"""The thief's toolbox: removal attacks on a ticket, each ``model -> attacked model``.

Every attack returns a new model and leaves its input untouched. ``apply_attack`` runs
one by name on a ``Ticket`` and records kind, parameters and accuracy before/after in the
stolen ticket's ``meta["history"]``; ``ticketmark.attacks.sweep`` runs a plan of them.
"""

from ticketmark.attacks.apply import (
    ATTACKS,
    NEEDS_DATA,
    apply_attack,
    attack_defaults,
    attack_file,
    register_attack,
    resolve_params,
)
from ticketmark.attacks.batchnorm import has_batchnorm, recalibrate_bn
from ticketmark.attacks.distill import DISTILL_MASKS, distill
from ticketmark.attacks.finetune import FINETUNE_MODES, finetune, thief_splits
from ticketmark.attacks.noise import fill, noise
from ticketmark.attacks.permute import (
    ChannelGroup,
    apply_permutation,
    channel_groups,
    permute,
    permute_with_perms,
)
from ticketmark.attacks.prune import PRUNE_METHODS, prune
from ticketmark.attacks.quantize import QUANT_SCHEMES, BitReport, effective_bits, quantize

__all__ = [
    "ATTACKS",
    "DISTILL_MASKS",
    "FINETUNE_MODES",
    "NEEDS_DATA",
    "PRUNE_METHODS",
    "QUANT_SCHEMES",
    "BitReport",
    "ChannelGroup",
    "apply_attack",
    "apply_permutation",
    "attack_defaults",
    "attack_file",
    "channel_groups",
    "distill",
    "effective_bits",
    "fill",
    "finetune",
    "has_batchnorm",
    "noise",
    "permute",
    "permute_with_perms",
    "prune",
    "quantize",
    "recalibrate_bn",
    "register_attack",
    "resolve_params",
    "thief_splits",
]
