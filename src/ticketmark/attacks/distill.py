"""Distillation: train a fresh sparse student on the stolen model's soft labels.

The strongest removal attack in the toolbox: nothing of the owner's weights or mask is
copied, only the function (queried on the thief's own data). The student's mask is drawn
fresh (``mask="random"``, the teacher's per-layer density so capacity matches), kept from
the teacher (``"same"``) or absent (``"dense"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.attacks.common import check_data, clone_model
from ticketmark.attacks.finetune import thief_splits
from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.sparsity import Mask, prunable_names
from ticketmark.training import predict, seed_everything
from ticketmark.training.distributed import DistEnv, pick_device
from ticketmark.training.progress import progress_bar

DISTILL_MASKS = ("random", "same", "dense")


def _reinit(model: nn.Module) -> None:
    """He-normal weights and zero biases (what the registry's plain nets start from, and
    sound for the BatchNorm nets too); fresh BatchNorm: nothing of the teacher survives."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _student_mask(student: nn.Module, teacher: nn.Module, kind: str, seed: int) -> Mask | None:
    """No mask, the teacher's, or a random one with the teacher's count in every layer."""
    if kind == "dense":
        return None
    names = prunable_names(teacher)
    teacher_mask = Mask.from_weights(teacher, names)
    if kind == "same":
        return teacher_mask
    gen = torch.Generator().manual_seed(seed + 104_729)
    out = {}
    for n in names:
        m = teacher_mask[n]
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[torch.rand(m.numel(), generator=gen).topk(int(m.sum())).indices] = True
        out[n] = keep.view_as(m)
    return Mask(out)


def distill(model: nn.Module, data: DataSplits, *, epochs: int = 20, lr: float | None = None,
            temperature: float = 4.0, alpha: float = 1.0, mask: str = "random",
            thief_fraction: float = 0.5, batch_size: int = 64, seed: int = 0,
            progress: bool = False, device: str = "auto") -> nn.Module:
    """A freshly initialised student trained to match ``model``'s softened outputs.

    Loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)``
    (Hinton et al.); ``alpha=1`` uses no ground-truth labels at all, as a thief who only
    has unlabelled data would. The thief's part of ``data.train`` is the transfer set.
    """
    if mask not in DISTILL_MASKS:
        raise TicketmarkError(f"unknown student mask {mask!r}; choose one of: "
                              f"{', '.join(DISTILL_MASKS)}")
    if lr is None:
        lr = 0.05 if _has_batchnorm(model) else 0.01
    if int(epochs) < 0 or float(lr) <= 0 or float(temperature) <= 0:
        raise TicketmarkError("distill needs epochs >= 0, lr > 0 and temperature > 0")
    if not 0.0 <= float(alpha) <= 1.0:
        raise TicketmarkError(f"distill alpha must be in [0, 1], got {alpha}")
    teacher = clone_model(model).eval()
    check_data(teacher, data)
    transfer = thief_splits(data, thief_fraction).train
    seed_everything(int(seed))
    student = clone_model(model)
    _reinit(student)
    student_mask = _student_mask(student, teacher, mask, int(seed))
    if student_mask is not None:
        student_mask.apply(student)
    soft = predict(teacher, transfer.x)  # fixed targets: no augmentation on this set
    dev = pick_device(device, DistEnv())
    student.to(dev)
    enforcer = student_mask.enforcer(student) if student_mask is not None else None
    opt = torch.optim.SGD(student.parameters(), lr=float(lr), momentum=0.9,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, int(epochs)))
    batches = -(-len(transfer) // batch_size)
    t = float(temperature)
    with progress_bar(progress) as bar:
        task = bar.add_task("distill", total=int(epochs) * batches, status="")
        gen = torch.Generator().manual_seed(int(seed))
        for epoch in range(1, int(epochs) + 1):
            student.train()
            for i in torch.randperm(len(transfer), generator=gen).split(batch_size):
                x, y, target = transfer.x[i].to(dev), transfer.y[i], soft[i].to(dev)
                logits = student(x)
                kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(target / t, 1),
                              reduction="batchmean") * t * t
                loss = alpha * kd
                if alpha < 1:
                    loss = loss + (1 - alpha) * F.cross_entropy(logits, y.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if enforcer is not None:
                    enforcer.before_step()
                opt.step()
                if enforcer is not None:
                    enforcer.after_step()
                bar.update(task, advance=1, status=f"epoch {epoch} loss {loss.item():.3f}")
            sched.step()
    return student.cpu().eval()
