"""``Mask``: parameter name -> bool tensor, with the operations a ticket needs.

Unlike masking only at forward time, ``enforce`` is applied to gradients before and to
weights after each optimizer step, so momentum never accumulates in pruned positions and a
pruned weight stays exactly 0.0 for the whole run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.sparsity.prunable import PrunePolicy, prunable_names


class Mask(Mapping[str, torch.Tensor]):
    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = {k: v.detach().to(torch.bool).cpu() for k, v in tensors.items()}

    # Mapping protocol -------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        return self._t[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    # construction ------------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, policy: PrunePolicy = PrunePolicy()) -> Mask:
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool)
                    for n in prunable_names(model, policy)})

    @classmethod
    def from_weights(cls, model: nn.Module, names: list[str]) -> Mask:
        """The mask a model's weights imply: every non-zero entry is unpruned."""
        params = dict(model.named_parameters())
        return cls({n: params[n].detach() != 0 for n in names})

    def clone(self) -> Mask:
        return Mask({k: v.clone() for k, v in self._t.items()})

    # statistics --------------------------------------------------------------------------
    def count(self) -> int:
        return int(sum(int(v.sum()) for v in self._t.values()))

    def size(self) -> int:
        return int(sum(v.numel() for v in self._t.values()))

    def density(self) -> float:
        return self.count() / max(1, self.size())

    def sparsity(self) -> float:
        return 1.0 - self.density()

    def layer_density(self) -> dict[str, float]:
        return {k: float(v.float().mean()) for k, v in self._t.items()}

    def layer_counts(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self._t.items()}

    # use on a model ----------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, m in self._t.items():
            if name not in params:
                raise TicketmarkError(f"mask names layer {name!r}, which the model lacks")
            if params[name].shape != m.shape:
                raise TicketmarkError(
                    f"mask for {name} has shape {tuple(m.shape)}, "
                    f"the model's weight {tuple(params[name].shape)}"
                )

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = dict(model.named_parameters())
        names = list(self._t)
        weights = [params[n] for n in names]
        masks = [self._t[n].to(device=w.device, dtype=w.dtype) for n, w in zip(names, weights,
                                                                                   strict=True)]
        return weights, masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero every pruned weight in place (and return the model for chaining)."""
        self.check(model)
        weights, masks = self._pairs(model)
        torch._foreach_mul_(weights, masks)
        return model

    def enforcer(self, model: nn.Module) -> MaskEnforcer:
        return MaskEnforcer(self, model)


class MaskEnforcer:
    """Keeps a mask applied during training with two fused multiplies per step."""

    def __init__(self, mask: Mask, model: nn.Module):
        mask.check(model)
        self.weights, self.masks = mask._pairs(model)

    @torch.no_grad()
    def before_step(self) -> None:
        grads = [w.grad for w in self.weights if w.grad is not None]
        if len(grads) == len(self.weights):
            torch._foreach_mul_(grads, self.masks)
        else:
            for w, m in zip(self.weights, self.masks, strict=True):
                if w.grad is not None:
                    w.grad.mul_(m)

    @torch.no_grad()
    def after_step(self) -> None:
        torch._foreach_mul_(self.weights, self.masks)

    @torch.no_grad()
    def clear_momentum(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero optimizer state in pruned positions (for a mask applied mid-training)."""
        for w, m in zip(self.weights, self.masks, strict=True):
            for value in optimizer.state.get(w, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == w.shape:
                    value.mul_(m)
