"""Unpairing: fine-tune a released ticket so its adversarial examples stop fooling the
private model, at a bounded cost in clean accuracy.

Adversarial examples transfer between two models when their input gradients point the same
way (Demontis et al. 2019); TRS (Yang et al. 2021) trains ensemble members apart by
penalising the cosine similarity of their loss gradients. We do that for one released
ticket against a frozen private model: the loss on a batch is

    CE(released(x), y) + weight * mean_i cos^2(grad_x CE_released(x_i), grad_x CE_private(x_i))

at a random point of the eps box around each image (so the penalty covers the neighbourhood
PGD explores, not only the clean point). cos^2, not cos: a released ticket whose gradients
are anti-aligned with the private model's would hand the attacker the private model's
direction with a flipped sign. The mask stays applied, so the released ticket keeps its
sparsity and fingerprint.

The bound: after each epoch the attack and clean accuracy are measured on the validation
split; the epoch kept is the one where the released ticket's PGD examples fool the private
model least often (``private_fooled``: the attacker's success against the private model,
not the transfer rate, which an unpaired ticket can lower just by becoming easier to fool
itself) among those whose validation accuracy is at most ``max_drop`` points below the
released ticket's. If no epoch improves within the bound the released ticket is returned
unchanged, and the report says so.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.data import DataSplits, TensorLoader
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.io.ticket import state_of
from ticketmark.robustness.pixels import PixelSpace
from ticketmark.robustness.transfer import TransferOptions, measure_transfer
from ticketmark.training import evaluate, seed_everything
from ticketmark.training.progress import progress_bar


@dataclass
class UnpairOptions:
    epochs: int = 3
    weight: float = 1.0
    lr: float = 0.01
    batch_size: int = 64
    max_drop: float = 1.0  # points of validation accuracy the fine-tuning may cost
    eps: float = 0.1
    steps: int = 10  # PGD steps of the per-epoch transfer check
    val_limit: int = 500
    seed: int = 0

    def validate(self) -> UnpairOptions:
        if self.epochs < 1:
            raise TicketmarkError(f"unpair needs >= 1 epoch, got {self.epochs}")
        if self.weight < 0 or self.lr <= 0 or self.batch_size < 1:
            raise TicketmarkError("unpair needs weight >= 0, lr > 0 and batch size >= 1")
        if self.max_drop < 0:
            raise TicketmarkError(f"max drop must be >= 0 points, got {self.max_drop}")
        TransferOptions(self.eps, self.steps, limit=self.val_limit).validate()
        return self


def gradient_alignment(released: nn.Module, private: nn.Module, x: torch.Tensor,
                       y: torch.Tensor) -> torch.Tensor:
    """Per-image cos^2 of the two models' input gradients, differentiable in ``released``."""
    xr = x.detach().requires_grad_(True)
    (g_rel,) = torch.autograd.grad(F.cross_entropy(released(xr), y), xr, create_graph=True)
    xp = x.detach().requires_grad_(True)
    (g_priv,) = torch.autograd.grad(F.cross_entropy(private(xp), y), xp)
    cos = F.cosine_similarity(g_rel.flatten(1), g_priv.detach().flatten(1), dim=1, eps=1e-12)
    return cos**2


def _random_in_box(x: torch.Tensor, space: PixelSpace, eps: float,
                   gen: torch.Generator) -> torch.Tensor:
    lo, hi = space.bounds(x)
    noise = torch.rand(x.shape, generator=gen) * 2 - 1
    return torch.minimum(torch.maximum(x + noise * space.scale(eps, x), lo), hi)


def _check(released: nn.Module, private: nn.Module, data: DataSplits,
           opts: UnpairOptions) -> dict[str, Any]:
    t = measure_transfer(released, private, data,
                         TransferOptions(opts.eps, opts.steps, limit=opts.val_limit,
                                         seed=opts.seed), split="val")
    return {"val_acc": evaluate(released, data.val)[0], "val_transfer_rate": t["transfer_rate"],
            "val_private_fooled": t["private_fooled"]}


def unpair(ticket: Ticket, private: nn.Module, data: DataSplits, opts: UnpairOptions,
           progress: bool = True) -> tuple[Ticket, dict[str, Any]]:
    """The unpaired ticket and a record of every epoch (validation figures only)."""
    opts.validate()
    seed_everything(opts.seed)
    space = PixelSpace.of(data)
    private = copy.deepcopy(private).eval()
    for p in private.parameters():
        p.requires_grad_(False)
    model = ticket.build()
    enforcer = ticket.mask.enforcer(model)
    opt = torch.optim.SGD(model.parameters(), lr=opts.lr, momentum=0.9, weight_decay=5e-4)
    loader = TensorLoader(data.train, opts.batch_size, shuffle=True, seed=opts.seed)
    gen = torch.Generator().manual_seed(opts.seed + 31)
    start = _check(model, private, data, opts)
    epochs: list[dict[str, Any]] = [{"epoch": 0, **start}]
    best_state, best = None, start
    with progress_bar(progress) as bar:
        task = bar.add_task("unpair", total=opts.epochs * len(loader), status="")
        for epoch in range(1, opts.epochs + 1):
            loader.set_epoch(epoch)
            model.train()
            sums = torch.zeros(3, dtype=torch.float64)
            for x, y in loader:
                opt.zero_grad(set_to_none=True)
                ce = F.cross_entropy(model(x), y)
                align = gradient_alignment(model, private, _random_in_box(x, space, opts.eps,
                                                                          gen), y).mean()
                (ce + opts.weight * align).backward()
                enforcer.before_step()
                opt.step()
                enforcer.after_step()
                sums += torch.tensor([ce.item() * len(y), align.item() * len(y), len(y)],
                                     dtype=torch.float64)
                bar.update(task, advance=1, status=f"epoch {epoch} ce {ce.item():.3f} "
                                                    f"cos2 {align.item():.3f}")
            row = {"epoch": epoch, "train_ce": float(sums[0] / sums[2]),
                   "train_cos2": float(sums[1] / sums[2]), **_check(model, private, data, opts)}
            row["within_bound"] = row["val_acc"] >= start["val_acc"] - opts.max_drop
            epochs.append(row)
            if row["within_bound"] and row["val_private_fooled"] < best["val_private_fooled"]:
                best, best_state = row, state_of(model)
    kept = best.get("epoch", 0)
    # The kept epoch's weights, or the released ticket's own when no epoch met the bound.
    model.load_state_dict(best_state if best_state is not None else ticket.build().state_dict())
    record = {"kind": "unpair", "params": asdict(opts), "kept_epoch": kept,
              "changed": best_state is not None, "epochs": epochs}
    history = [*ticket.meta.get("history", []),
               {"kind": "unpair", "params": asdict(opts), "kept_epoch": kept,
                "acc_before": start["val_acc"], "acc_after": best["val_acc"]}]
    test_acc = evaluate(model, data.test)[0]
    record["test_acc"] = test_acc
    metrics = [*ticket.meta.get("metrics", []), {"phase": "unpair", "test_acc": test_acc}]
    return ticket.with_model(model, history=history, metrics=metrics), record
