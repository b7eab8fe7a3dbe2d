"""The training loop every finder, embedder and attack shares.

The mask is enforced on gradients before and on weights after each step; under torchrun
the model is wrapped in DistributedDataParallel and each rank trains on its own shard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ticketmark.data import DataSplits, Split, TensorLoader
from ticketmark.io.ticket import state_of
from ticketmark.sparsity.mask import Mask
from ticketmark.training.config import TrainConfig
from ticketmark.training.distributed import all_reduce_sum, dist_env, pick_device
from ticketmark.training.progress import progress_bar
from ticketmark.training.seeding import seed_everything

# Called after every epoch with (epoch number starting at 1, the bare model, metrics);
# returning True stops training early (early-bird uses this).
EpochCallback = Callable[[int, nn.Module, dict[str, Any]], bool]
# Called after every optimizer step with (epoch, global step, both starting at 1, the bare
# model); returning True ends the epoch after this step and then training (early-bird's
# every-k-steps mask check).
StepCallback = Callable[[int, int, nn.Module], bool]
# Replaces each training batch before the step, given (the bare model, x, y): adversarial
# training plugs in here (ticketmark.robustness.adversarial).
BatchTransform = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# Runs forward *and* backward for one batch, given (the model to call, x, y), and returns
# (loss, logits) on the batch's own rows: objectives that need several passes per step
# (trigger embedding under weight perturbations, ticketmark.ownership.trigger.hardening)
# plug in here; the mask, optimizer and bookkeeping stay the loop's.
BatchStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The default step: mean cross-entropy over the batch."""
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss, logits


@dataclass
class TrainResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] | None = None
    epochs_run: int = 0
    steps_run: int = 0
    steps_per_epoch: int = 0

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for ``x`` in eval mode, on the model's device, returned on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = [model(x[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Top-1 accuracy (percent) and mean cross-entropy loss."""
    logits = predict(model, split.x, batch_size)
    loss = float(F.cross_entropy(logits, split.y)) if len(split) else 0.0
    acc = 100.0 * float((logits.argmax(1) == split.y).float().mean()) if len(split) else 0.0
    return acc, loss


def train(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    mask: Mask | None = None,
    *,
    rewind_epoch: int | None = None,
    metrics_path: str | Path | None = None,
    desc: str = "train",
    progress: bool = True,
    callback: EpochCallback | None = None,
    params: list[nn.Parameter] | None = None,
    step_callback: StepCallback | None = None,
    batch_transform: BatchTransform | None = None,
    batch_step: BatchStep = cross_entropy_step,
) -> TrainResult:
    """Train in place; return per-epoch metrics and, if asked, the state at ``rewind_epoch``.

    ``params`` restricts which parameters the optimizer updates (last-layer fine-tuning).
    ``batch_transform`` replaces each batch's inputs before the step; without one,
    ``cfg.adversarial`` (if set) builds the adversarial-training transform.
    ``batch_step`` computes each batch's loss and gradients (default: cross-entropy).
    """
    cfg.validate()
    env = dist_env()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device, env)
    model.to(device)
    enforcer = mask.enforcer(model) if mask is not None and len(mask) else None
    if enforcer is not None:
        enforcer.after_step()
    trainable = params if params is not None else [p for p in model.parameters()
                                                     if p.requires_grad]
    lr = cfg.lr if cfg.lr is not None else 0.05
    opt = torch.optim.SGD(trainable, lr=lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, cfg.resolved_milestones(), cfg.gamma)
    net: nn.Module = model
    if env.world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                      else None)
    if batch_transform is None and cfg.adversarial is not None:
        from ticketmark.robustness.adversarial import adversarial_transform

        batch_transform = adversarial_transform(cfg.adversarial, data, cfg.seed)
    augment = data.augment if cfg.augment is None else cfg.augment
    loader = TensorLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                          augment=augment, rank=env.rank, world=env.world)
    result = TrainResult(steps_per_epoch=len(loader))
    if rewind_epoch == 0:
        result.rewind_state = state_of(model)
    out = Path(metrics_path) if metrics_path and env.is_main else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
    with progress_bar(progress and env.is_main) as bar:
        task = bar.add_task(desc, total=cfg.epochs * len(loader), status="")
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            loader.set_epoch(epoch)
            net.train()
            sums = torch.zeros(3, dtype=torch.float64)
            stop = False
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if batch_transform is not None:
                    x = batch_transform(model, x, y)
                opt.zero_grad(set_to_none=True)
                loss, logits = batch_step(net, x, y)
                if enforcer is not None:
                    enforcer.before_step()
                opt.step()
                if enforcer is not None:
                    enforcer.after_step()
                loss_value = loss.item()
                with torch.no_grad():
                    sums += torch.tensor([loss_value * len(y),
                                          float((logits.argmax(1) == y).sum()), len(y)],
                                         dtype=torch.float64)
                bar.update(task, advance=1, status=f"epoch {epoch}/{cfg.epochs} "
                                                    f"loss {loss_value:.3f}")
                result.steps_run += 1
                if step_callback is not None and step_callback(epoch, result.steps_run, model):
                    stop = True
                    break
            sched.step()
            total_loss, correct, seen = all_reduce_sum(sums.tolist(), device)
            val_acc, val_loss = evaluate(model, data.val)
            test_acc, test_loss = evaluate(model, data.test)
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"],
                   "train_loss": total_loss / max(seen, 1),
                   "train_acc": 100.0 * correct / max(seen, 1),
                   "val_acc": val_acc, "val_loss": val_loss,
                   "test_acc": test_acc, "test_loss": test_loss,
                   "time_s": time.perf_counter() - start}
            if mask is not None and len(mask):
                row["density"] = mask.density()
            result.metrics.append(row)
            result.epochs_run = epoch
            if out is not None:
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if rewind_epoch is not None and epoch == rewind_epoch:
                result.rewind_state = state_of(model)
            if stop or (callback is not None and callback(epoch, model, row)):
                break
    model.to("cpu")
    return result
