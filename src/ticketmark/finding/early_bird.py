"""Early-bird tickets: draw the ticket during dense training instead of after N trainings.

Every ``check_every`` epochs (or optimizer steps) of one dense run, the mask the network
would get if it were pruned to the target sparsity right now is computed: by global weight
magnitude (unstructured) or by whole output channels (structured, scored by BatchNorm gamma
or by the filter's mean absolute weight relative to its layer's mean, with a floor of
channels kept per layer). Masks settle early in training, long before the
weights do, so the search stops once the newest mask is within ``epsilon`` normalised
Hamming distance of every other mask in a FIFO window. The mask drawn at that moment is
then rewound to epoch k and retrained like any other ticket.

Run layout: ``round_0`` is the dense search (mask all ones, weights at the stop, the
distance trace in ``meta["search"]``), ``round_1`` the retrained ticket. The drawn mask is
recomputed from ``round_0``'s weights on resume, which is deterministic, so a run killed
during retraining restarts retraining only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.finding.common import from_rewind, make_ticket, prepare, summary_row, train_round
from ticketmark.finding.config import FindConfig
from ticketmark.finding.layout import RunDir
from ticketmark.io import Ticket
from ticketmark.sparsity import Mask, magnitude_prune
from ticketmark.training import TrainConfig, train
from ticketmark.training.distributed import all_reduce_sum
from ticketmark.training.progress import console

CHANNEL_SCORES = ("auto", "bn", "l1")


# --------------------------------------------------------------------------------------------
# the stop criterion: pure, no model, no training
# --------------------------------------------------------------------------------------------
def hamming(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of positions where two flat bool masks differ (0: equal, 1: complementary)."""
    if a.shape != b.shape:
        raise TicketmarkError(f"masks of different sizes: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a != b).float().mean()) if a.numel() else 0.0


class MaskDistanceStop:
    """Early-bird's stop rule over a stream of masks, separate from training so it is testable.

    The queue holds the last ``window`` masks, newest included (the Early-Bird paper's FIFO
    of length 5). ``update`` pushes a mask and answers True once the queue is full and the
    newest mask is within ``epsilon`` of every older mask in it. Comparing with all of them,
    not just the previous one, rejects a mask that drifts slowly but steadily.
    """

    def __init__(self, epsilon: float = 0.1, window: int = 5):
        if not 0.0 < epsilon <= 1.0:
            raise TicketmarkError(f"epsilon must be in (0, 1], got {epsilon}")
        if window < 2:
            raise TicketmarkError(f"window must hold at least 2 masks, got {window}")
        self.epsilon, self.window = epsilon, window
        self._queue: deque[torch.Tensor] = deque(maxlen=window)
        self.history: list[float | None] = []  # max distance in the window at each check

    @property
    def max_distance(self) -> float | None:
        """Largest distance from the newest mask to the older ones (None before 2 masks)."""
        return self.history[-1] if self.history else None

    def update(self, bits: torch.Tensor) -> bool:
        bits = bits.detach().flatten().to(torch.bool).cpu()
        self._queue.append(bits)
        older = list(self._queue)[:-1]
        dist = max((hamming(bits, m) for m in older), default=None)
        self.history.append(dist)
        return len(self._queue) == self.window and dist is not None and dist < self.epsilon


# --------------------------------------------------------------------------------------------
# drawing the mask at the target sparsity
# --------------------------------------------------------------------------------------------
@dataclass
class EarlyBirdOptions:
    """The finder's knobs, stored in ``FindConfig.extra`` so they land in ``hparams.json``."""

    epsilon: float = 0.1
    window: int = 5
    check_every: int = 1
    check_unit: str = "epoch"  # "epoch" or "step"
    structured: bool = False
    channel_score: str = "auto"  # structured only: "bn" (BatchNorm |gamma|), "l1", "auto"
    min_channels: float = 0.1  # structured only: share of each layer's channels always kept
    max_search_epochs: int | None = None  # None: the training recipe's epochs

    @classmethod
    def from_config(cls, cfg: FindConfig) -> EarlyBirdOptions:
        unknown = sorted(set(cfg.extra) - set(cls.__dataclass_fields__))
        if unknown:
            raise TicketmarkError(f"early-bird does not know the option(s) {', '.join(unknown)}")
        opts = cls(**cfg.extra)
        opts.validate(cfg)
        return opts

    def search_epochs(self, cfg: FindConfig) -> int:
        return cfg.train.epochs if self.max_search_epochs is None else self.max_search_epochs

    def validate(self, cfg: FindConfig) -> None:
        MaskDistanceStop(self.epsilon, self.window)  # same checks, one place
        if self.check_every < 1:
            raise TicketmarkError(f"check interval must be >= 1, got {self.check_every}")
        if self.check_unit not in {"epoch", "step"}:
            raise TicketmarkError(f"check unit must be 'epoch' or 'step', got {self.check_unit!r}")
        if self.channel_score not in CHANNEL_SCORES:
            raise TicketmarkError(f"channel score must be one of {', '.join(CHANNEL_SCORES)}, "
                                  f"got {self.channel_score!r}")
        if not 0.0 <= self.min_channels <= 1.0:
            raise TicketmarkError(f"min channels must be a share in [0, 1], "
                                  f"got {self.min_channels}")
        cap = self.search_epochs(cfg)
        if cap < 1:
            raise TicketmarkError(f"max search epochs must be >= 1, got {cap}")
        if cfg.rewind_epoch > cap:
            raise TicketmarkError(f"rewind epoch {cfg.rewind_epoch} is after the search cap of "
                                  f"{cap} epochs")


def _output_layer(model: nn.Module) -> str | None:
    """The last Conv2d/Linear's weight: its rows are the logits, never channels to prune."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            last = f"{name}.weight"
    return last


def _following_bn(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """Each conv weight -> the BatchNorm right after it in definition order, if sizes match."""
    out: dict[str, nn.BatchNorm2d] = {}
    pending: tuple[str, int] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            pending = (f"{name}.weight", m.weight.shape[0]) if isinstance(m, nn.Conv2d) else None
        elif isinstance(m, nn.BatchNorm2d) and pending is not None:
            if m.num_features == pending[1]:
                out[pending[0]] = m
            pending = None
    return out


def channel_scores(model: nn.Module, names: list[str], how: str = "auto"
                   ) -> dict[str, torch.Tensor]:
    """One score per output channel of each named weight; low scores are pruned first.

    The scores are ranked globally, across layers, so they must mean the same thing in
    every layer. ``bn`` uses |gamma| of the BatchNorm after the conv (network slimming, the
    Early-Bird paper's choice): BatchNorm puts every channel's pre-scale activation at unit
    variance, so gamma alone is the channel's output scale and gammas are comparable across
    layers (all start at 1).

    ``l1`` is for networks without BatchNorm: the filter's mean |w| **divided by the mean of
    that layer's filter scores**, so every layer's scores average 1 and only a channel's
    standing inside its own layer counts. Raw magnitudes are not comparable across layers:
    He init draws weights with std sqrt(2 / fan_in), so wide-fan-in layers start with
    smaller weights, and a ReLU network computes the same function when one layer is
    scaled by c and the next by 1/c, so a raw cross-layer comparison ranks an arbitrary
    choice of scale. Ranking raw mean |w| globally pruned 127 of conv4's 128 last-conv
    channels (a dead network); the normalised score is invariant to per-layer rescaling.
    ``auto`` uses ``bn`` only when every named layer has a BatchNorm, because the two
    scales are not comparable with each other.
    """
    params = dict(model.named_parameters())
    bns = _following_bn(model)
    if how == "bn" and not all(n in bns for n in names):
        missing = [n for n in names if n not in bns]
        raise TicketmarkError(f"channel score 'bn' needs a BatchNorm after every pruned layer; "
                              f"{missing[0]} has none (use 'l1')")
    use_bn = how == "bn" or (how == "auto" and all(n in bns for n in names))
    with torch.no_grad():
        if use_bn:
            return {n: bns[n].weight.detach().abs().float().cpu() for n in names}
        out = {}
        for n in names:
            raw = params[n].detach().abs().flatten(1).mean(1).float().cpu()
            # An all-zero layer has no ranking to normalise; leave it at zero (pruned first).
            out[n] = raw / raw.mean() if float(raw.mean()) > 0 else raw
        return out


def channel_mask(model: nn.Module, base: Mask, sparsity: float, how: str = "auto",
                 min_keep: float = 0.1) -> tuple[Mask, torch.Tensor]:
    """Prune whole output channels, lowest score first, until ``sparsity`` of the weights go.

    Returns the mask and its flat per-channel keep bits (what the stop rule compares). The
    logit layer's rows are never pruned, so the network cannot lose a class; every other
    layer keeps its ``ceil(min_keep * channels)`` best channels (at least one), so no layer
    is cut to a bottleneck the rest of the network cannot train through. The floor is a
    guard, not the ranking: with comparable scores (see ``channel_scores``) a global
    threshold prunes each layer by roughly the same share and the floor rarely binds; it
    exists because any global threshold empties a layer whose scores all sit low (raw
    ``l1`` did exactly that to conv4), and BN gammas can drift that way under training too.
    Neither network slimming nor the Early-Bird paper sets a floor; 10% is our choice, low
    enough not to fight the ranking at the usual 50-90% targets. The weight
    sparsity reached is the largest one not above the target (short of it by less than one
    channel's fan-in), or less when the floors leave too few channels to prune.
    """
    if not 0.0 <= min_keep <= 1.0:
        raise TicketmarkError(f"min_keep must be in [0, 1], got {min_keep}")
    names = list(base)
    logits = _output_layer(model)
    prunable = [n for n in names if n != logits]
    if not prunable:
        raise TicketmarkError("structured pruning needs a prunable layer besides the output")
    scores = channel_scores(model, prunable, how)
    fan_in = [base[n][0].numel() for n in prunable]
    costs = torch.cat([torch.full((base[n].shape[0],), f, dtype=torch.float64)
                       for n, f in zip(prunable, fan_in, strict=True)])
    sizes = [base[n].shape[0] for n in prunable]
    protected = []
    for n, size in zip(prunable, sizes, strict=True):
        floor = max(1, math.ceil(min_keep * size))
        best = torch.zeros(size, dtype=torch.bool)
        best[torch.argsort(scores[n].double(), descending=True, stable=True)[:floor]] = True
        protected.append(best)
    flat = torch.cat([scores[n] for n in prunable]).double()
    flat[torch.cat(protected)] = float("inf")  # each layer's floor is never pruned
    order = torch.argsort(flat, stable=True)
    budget = round(sparsity * base.size())
    cum = torch.cumsum(costs[order], 0)
    n_pruned = int((cum <= budget).sum())
    n_pruned = min(n_pruned, int(torch.isfinite(flat).sum()))
    keep = torch.ones(len(flat), dtype=torch.bool)
    keep[order[:n_pruned]] = False
    out: dict[str, torch.Tensor] = {}
    rows = dict(zip(prunable, keep.split(sizes), strict=True))
    for n in names:
        if n in rows:
            shape = (-1,) + (1,) * (base[n].dim() - 1)
            out[n] = rows[n].view(shape).expand_as(base[n]) & base[n]
        else:
            out[n] = base[n].clone()
    return Mask(out), keep


def draw_mask(model: nn.Module, cfg: FindConfig, opts: EarlyBirdOptions
              ) -> tuple[Mask, torch.Tensor]:
    """The target-sparsity mask of the model as it is now, and the bits the stop rule sees."""
    base = Mask.ones(model, cfg.policy)
    if opts.structured:
        return channel_mask(model, base, cfg.sparsity, opts.channel_score, opts.min_channels)
    mask = magnitude_prune(model, base, cfg.sparsity, cfg.scope)
    return mask, torch.cat([mask[n].flatten() for n in mask])


class _Monitor:
    """Glue between the training loop's hooks and the stop rule, with the interval and the
    rule that the search may not end before the rewind weights exist."""

    def __init__(self, cfg: FindConfig, opts: EarlyBirdOptions):
        self.cfg, self.opts = cfg, opts
        self.stop = MaskDistanceStop(opts.epsilon, opts.window)
        self.trace: list[dict[str, Any]] = []
        self.stopped_at: dict[str, Any] | None = None

    def _check(self, epoch_done: float, step: int, model: nn.Module) -> bool:
        _, bits = draw_mask(model, self.cfg, self.opts)
        converged = self.stop.update(bits)
        self.trace.append({"epoch": epoch_done, "step": step, "distance": self.stop.max_distance})
        # Every rank holds the same weights under DDP; agreeing explicitly costs one scalar.
        device = next(model.parameters()).device
        return all_reduce_sum([float(converged)], device)[0] > 0

    def _stop(self, epoch: float, step: int) -> bool:
        self.stopped_at = {"epoch": epoch, "step": step}
        return True

    def on_epoch(self, epoch: int, model: nn.Module, row: dict[str, Any]) -> bool:
        if self.opts.check_unit != "epoch" or epoch % self.opts.check_every:
            return False
        converged = self._check(epoch, 0, model)
        return converged and epoch >= self.cfg.rewind_epoch and self._stop(epoch, 0)

    def on_step(self, epoch: int, step: int, model: nn.Module) -> bool:
        if self.opts.check_unit != "step" or step % self.opts.check_every:
            return False
        converged = self._check(epoch, step, model)
        # The rewind weights are taken at the end of epoch k: no stop inside epochs 1..k.
        return converged and epoch > self.cfg.rewind_epoch and self._stop(epoch, step)


def run_early_bird(cfg: FindConfig, out: str | Path, progress: bool = True) -> Ticket:
    cfg.validate()
    if cfg.method != "early-bird":
        raise TicketmarkError(f"early-bird finder got method {cfg.method!r}")
    opts = EarlyBirdOptions.from_config(cfg)
    data, model = prepare(cfg)  # fails on bad names or data before anything is written
    run = RunDir(out)
    run.start(cfg)
    rows = []
    search = run.finished_round(0)
    if search is None:
        monitor = _Monitor(cfg, opts)
        cap = opts.search_epochs(cfg)
        dense = Mask.ones(model, cfg.policy)
        search_cfg = TrainConfig.from_dict({**cfg.train.to_dict(), "epochs": cap})
        result = train(model, data, search_cfg, dense, rewind_epoch=cfg.rewind_epoch,
                       metrics_path=run.round_dir(0) / "metrics.jsonl",
                       desc="early-bird search (dense)", progress=progress,
                       callback=monitor.on_epoch, step_callback=monitor.on_step)
        spent = result.steps_run / max(1, result.steps_per_epoch)
        info = {"converged": monitor.stopped_at is not None, "stopped_at": monitor.stopped_at,
                "epochs_spent": spent, "cap_epochs": cap, "trace": monitor.trace,
                "options": asdict(opts)}
        search = make_ticket(cfg, data, model, dense, result.rewind_state, round=0,
                             metrics=result.metrics, epochs_run=spent, search=info)
        run.save_round(0, search)
    info = search.meta["search"]
    if progress:
        where = (f"converged at epoch {info['epochs_spent']:.2f}" if info["converged"]
                 else f"did not converge within {info['cap_epochs']} epochs")
        console.print(f"[dim]early-bird search {where}")
    rows.append({**summary_row(0, search, info["epochs_spent"]), "phase": "search",
                 "converged": info["converged"]})
    ticket = run.finished_round(1)
    if ticket is None:
        if search.rewind is None:
            raise TicketmarkError(f"{run.round_ticket(0)} has no rewind weights; remove the run")
        mask, _ = draw_mask(search.build(), cfg, opts)
        model = from_rewind(model, search.rewind, mask)
        result = train_round(cfg, data, model, mask, run, 1, progress=progress)
        ticket = make_ticket(cfg, data, model, mask, search.rewind, round=1,
                             metrics=result.metrics, epochs_run=result.epochs_run,
                             search=info)
        run.save_round(1, ticket)
    rows.append({**summary_row(1, ticket, ticket.meta.get("epochs_run", cfg.train.epochs)),
                 "phase": "retrain"})
    run.finish(ticket, rows)
    return ticket
