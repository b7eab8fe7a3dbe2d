"""Helpers every attack shares: copying, choosing layers, checking data against a model.

Attacks never modify their input: the owner's model and the thief's copy must be
comparable side by side (robustness tables put the two accuracies in one row).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.sparsity import prunable_names


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy on the CPU, so the caller's model (and device) are left untouched."""
    return copy.deepcopy(model).cpu()


def weight_names(model: nn.Module) -> list[str]:
    """Every Conv2d / Linear weight in forward-definition order.

    Quantization, noise and fill touch all of them by default (stem and classifier
    included): a thief shipping a compressed model compresses every layer, not only the
    ones the owner's mask covers.
    """
    return [f"{n}.weight" for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)]


def resolve_names(model: nn.Module, names: list[str] | None, default: str = "all") -> list[str]:
    """Validate ``names`` against the model; ``None`` means the attack's default set."""
    if names is None:
        return prunable_names(model) if default == "prunable" else weight_names(model)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise TicketmarkError(f"the model has no parameter {missing[0]!r} "
                              f"(layers: {', '.join(weight_names(model)[:4])}, ...)")
    return list(names)


def params_by_name(model: nn.Module, names: list[str]) -> list[nn.Parameter]:
    params = dict(model.named_parameters())
    return [params[n] for n in names]


def check_fraction(value: float, what: str) -> float:
    """Ratios of remaining weights live in [0, 1): 1 would remove every weight."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TicketmarkError(f"{what} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise TicketmarkError(f"{what} must be in [0, 1), got {value}")
    return v


def check_nonnegative(value: float, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TicketmarkError(f"{what} must be a number >= 0, got {value!r}") from None
    if not v >= 0.0 or v == float("inf"):
        raise TicketmarkError(f"{what} must be a finite number >= 0, got {value}")
    return v


@torch.no_grad()
def check_data(model: nn.Module, data: DataSplits) -> None:
    """Fail with one line when ``data`` cannot feed ``model`` (shape or class count).

    A dataset of the wrong shape would otherwise surface as a matrix-size traceback deep
    inside the training loop.
    """
    if len(data.test) == 0 and len(data.train) == 0:
        raise TicketmarkError(f"dataset {data.name!r} is empty")
    probe = (data.train if len(data.train) else data.test).x[:2]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = model(probe.to(device))
    except RuntimeError:
        raise TicketmarkError(
            f"dataset {data.name!r} has input shape {data.input_shape}, which this model "
            f"does not accept") from None
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] < data.num_classes:
        raise TicketmarkError(
            f"dataset {data.name!r} has {data.num_classes} classes but the model outputs "
            f"{tuple(out.shape[1:])}")


def last_layer(model: nn.Module) -> nn.Module:
    """The classifier: the last Linear (or Conv2d) module in definition order."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not layers:
        raise TicketmarkError("the model has no Linear or Conv2d layer to fine-tune")
    return layers[-1]
