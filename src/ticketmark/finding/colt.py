"""COLT, the Cyclic Overlapping Lottery Ticket: prune faster by keeping only what copies agree on.

The training data is cut into ``splits`` disjoint parts. Each cycle trains one copy of the
current ticket per part (from the same rewind weights, same mask), prunes each copy's
surviving weights by ``rate`` by magnitude, and keeps only the weights every copy kept: the
overlap. A weight that is important on one part of the data but not on another goes, so a
cycle removes more than ``rate`` and fewer cycles reach the target. The survivors are reset
to the rewind point and the next cycle starts. Since the k copies each see 1/k of the data,
one cycle costs about one full-data training (counted that way in ``summary.json``).

The last cycle lands exactly on the target: each copy is pruned to no fewer than the target
number of weights, and ``overlap`` fills the intersection back up to the target by mean
magnitude over the copies if it is smaller (or trims it if it is larger), so the kept set is
the intersection itself whenever that has the right size.

Run layout: ``round_0`` is the rewind point (dense training for ``rewind_epoch`` epochs),
``round_c`` (c >= 1) holds cycle c's overlap mask and ``round_c/copy_i`` each copy trained
on part i with its own pruned mask (so a run killed mid-cycle resumes at the next copy), and
the last round is the ticket retrained on all the data.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.finding.common import from_rewind, make_ticket, prepare, summary_row, train_round
from ticketmark.finding.config import FindConfig
from ticketmark.finding.layout import RunDir, load_if_finished
from ticketmark.io import Ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.sparsity import Mask, prune_by_scores
from ticketmark.training import train
from ticketmark.training.distributed import barrier, dist_env
from ticketmark.training.progress import console


@dataclass
class ColtOptions:
    """The finder's knobs (``FindConfig.extra``); the per-cycle rate is ``FindConfig.rate``."""

    splits: int = 2

    @classmethod
    def from_config(cls, cfg: FindConfig) -> ColtOptions:
        unknown = sorted(set(cfg.extra) - set(cls.__dataclass_fields__))
        if unknown:
            raise TicketmarkError(f"colt does not know the option(s) {', '.join(unknown)}")
        opts = cls(**cfg.extra)
        if opts.splits < 2:
            raise TicketmarkError(f"COLT needs at least 2 data splits, got {opts.splits}")
        if cfg.rate <= 0.0:
            raise TicketmarkError("COLT needs a per-cycle pruning rate > 0 to make progress")
        return opts


# --------------------------------------------------------------------------------------------
# the overlap: pure mask arithmetic
# --------------------------------------------------------------------------------------------
def target_keep(mask: Mask, sparsity: float) -> int:
    """How many weights a mask of this size keeps at ``sparsity`` (the rounding IMP uses)."""
    return mask.size() - int(round(sparsity * mask.size()))


def intersection(masks: Sequence[Mask]) -> Mask:
    if not masks:
        raise TicketmarkError("the overlap of no masks is undefined")
    names = list(masks[0])
    if any(list(m) != names for m in masks[1:]):
        raise TicketmarkError("masks to overlap cover different layers")
    return Mask({n: torch.stack([m[n] for m in masks]).all(0) for n in names})


def overlap(masks: Sequence[Mask], current: Mask, scores: Mapping[str, torch.Tensor],
            keep: int | None = None) -> Mask:
    """The weights every mask kept, adjusted to exactly ``keep`` weights if one is given.

    Too few (the copies disagreed a lot): add back the best-scoring weights of ``current``
    that the intersection dropped, so the result contains the whole intersection. Too many:
    drop its worst-scoring weights, so the result lies inside the intersection. Either way
    the adjustment touches only as many weights as the count is off by.
    """
    inter = intersection(masks)
    if keep is None:
        return inter
    have = inter.count()
    if keep < 0 or keep > current.count():
        raise TicketmarkError(f"cannot keep {keep} of {current.count()} surviving weights")
    if have == keep:
        return inter
    if have > keep:
        return prune_by_scores(inter, scores, (have - keep) / have, "global")
    names = list(current)
    pool = torch.cat([(current[n] & ~inter[n]).flatten() for n in names])
    flat = torch.cat([scores[n].detach().flatten().float().cpu() for n in names])
    flat = torch.where(pool, flat, torch.full_like(flat, float("-inf")))
    add = torch.zeros_like(pool)
    add[torch.topk(flat, keep - have, sorted=False).indices] = True
    sizes = [current[n].numel() for n in names]
    return Mask({n: inter[n] | part.view_as(inter[n])
                 for n, part in zip(names, add.split(sizes), strict=True)})


def split_data(data: DataSplits, parts: int, seed: int) -> list[DataSplits]:
    """Disjoint, near-equal, seeded random parts of the training split (val/test shared)."""
    if parts > len(data.train):
        raise TicketmarkError(f"cannot cut {len(data.train)} training images into {parts} parts")
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed + 104729))
    return [dataclasses.replace(data, train=data.train.subset(idx))
            for idx in torch.tensor_split(order, parts)]


# --------------------------------------------------------------------------------------------
# the finder
# --------------------------------------------------------------------------------------------
def _copy_path(run: RunDir, r: int, i: int) -> Path:
    return run.round_dir(r) / f"copy_{i}" / "ticket.safetensors"


def _finished_copy(run: RunDir, r: int, i: int) -> Ticket | None:
    return load_if_finished(_copy_path(run, r, i))


def _train_copy(cfg: FindConfig, part: DataSplits, template: nn.Module, rewind: dict,
                mask: Mask, keep: int, run: RunDir, r: int, i: int, progress: bool
                ) -> Ticket:
    """Train one copy on its part and prune it to ``keep`` weights; save it for resume."""
    model = from_rewind(template, rewind, mask)
    result = train(model, part, cfg.train, mask,
                   metrics_path=_copy_path(run, r, i).parent / "metrics.jsonl",
                   desc=f"cycle {r} copy {i} ({100 * mask.sparsity():.1f}% sparse)",
                   progress=progress)
    count = mask.count()
    params = dict(model.named_parameters())
    pruned = prune_by_scores(mask, {n: params[n].abs() for n in mask},
                             (count - keep) / count, cfg.scope)
    ticket = Ticket(cfg.model, cfg.dataset, part.in_channels, part.num_classes, part.image_size,
                    state_of(model), pruned, None,
                    {"method": "colt", "round": r, "copy": i, "train_images": len(part.train),
                     "trained_mask_count": count, "metrics": result.metrics,
                     "epochs_run": result.epochs_run})
    if dist_env().is_main:
        save_ticket(_copy_path(run, r, i), ticket)
    barrier()
    return ticket


def _cycle(cfg: FindConfig, opts: ColtOptions, parts: list[DataSplits], data: DataSplits,
           template: nn.Module, rewind: dict, mask: Mask, goal: int, run: RunDir, r: int,
           progress: bool) -> Ticket:
    count = mask.count()
    keep = max(goal, count - int(round(cfg.rate * count)))
    copies = []
    for i, part in enumerate(parts):
        done = _finished_copy(run, r, i)
        if done is not None and done.meta.get("trained_mask_count") == count:
            copies.append(done)
        else:
            copies.append(_train_copy(cfg, part, template, rewind, mask, keep, run, r, i,
                                      progress))
    states = [c.state for c in copies]
    scores = {n: torch.stack([s[n].abs().float() for s in states]).mean(0) for n in mask}
    inter = intersection([c.mask for c in copies])
    final = inter.count() <= goal
    new = overlap([c.mask for c in copies], mask, scores, goal if final else None)
    untrained = from_rewind(template, rewind, new)
    accs = [c.meta["metrics"][-1]["test_acc"] for c in copies if c.meta.get("metrics")]
    info = {"copies_test_acc": accs, "intersection": inter.count(), "kept": new.count(),
            "copy_keep": keep, "final_cycle": final, "phase": "cycle",
            "epochs_run": sum(c.meta["epochs_run"] * len(p.train) for c, p in
                              zip(copies, parts, strict=True)) / len(data.train)}
    ticket = make_ticket(cfg, data, untrained, new, rewind, round=r, **info)
    run.save_round(r, ticket)
    return ticket


def _row(r: int, ticket: Ticket) -> dict[str, Any]:
    row = summary_row(r, ticket, ticket.meta.get("epochs_run", 0))
    row["phase"] = ticket.meta.get("phase", "")
    if ticket.meta.get("copies_test_acc"):
        row["copies_test_acc"] = ticket.meta["copies_test_acc"]
        row["intersection"] = ticket.meta["intersection"]
    return row


def run_colt(cfg: FindConfig, out: str | Path, progress: bool = True) -> Ticket:
    cfg.validate()
    if cfg.method != "colt":
        raise TicketmarkError(f"COLT finder got method {cfg.method!r}")
    opts = ColtOptions.from_config(cfg)
    data, model = prepare(cfg)  # fails on bad names or data before anything is written
    parts = split_data(data, opts.splits, cfg.train.seed)
    run = RunDir(out)
    run.start(cfg)
    rows = []
    start = run.finished_round(0)
    if start is None:  # the rewind point: k dense epochs on all the data (k=0: the init)
        mask = Mask.ones(model, cfg.policy)
        result = train_round(cfg, data, model, mask, run, 0, rewind_epoch=cfg.rewind_epoch,
                             progress=progress, desc="rewind point (dense)",
                             epochs=cfg.rewind_epoch)
        start = make_ticket(cfg, data, model, mask, result.rewind_state, round=0,
                            metrics=result.metrics, epochs_run=result.epochs_run,
                            phase="rewind")
        run.save_round(0, start)
    rows.append(_row(0, start))
    rewind = start.rewind
    assert rewind is not None
    template = copy.deepcopy(model)
    mask = start.mask
    goal = target_keep(mask, cfg.sparsity)
    r = 1
    while True:
        done = run.finished_round(r)
        if done is not None and done.meta.get("phase") == "retrain":
            ticket = done
            break
        if done is None and mask.count() <= goal:  # cycles reached the target: retrain
            model = from_rewind(template, rewind, mask)
            result = train_round(cfg, data, model, mask, run, r, progress=progress)
            ticket = make_ticket(cfg, data, model, mask, rewind, round=r,
                                 metrics=result.metrics, epochs_run=result.epochs_run,
                                 phase="retrain")
            run.save_round(r, ticket)
            break
        if done is None:
            done = _cycle(cfg, opts, parts, data, template, rewind, mask, goal, run, r,
                          progress)
        elif progress:
            console.print(f"[dim]cycle {r}: already finished "
                          f"({100 * done.mask.sparsity():.1f}% sparse), skipping")
        rows.append(_row(r, done))
        mask = done.mask
        r += 1
    rows.append(_row(r, ticket))
    run.finish(ticket, rows)
    return ticket
