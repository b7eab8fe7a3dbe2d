"""Learned binary masks: hard-concrete gates with a smoothed L0 penalty (``--method l0``).

Magnitude pruning guesses which weights matter from their size; this finder learns it.
After one dense run, every prunable weight w gets a gate z in [0, 1] drawn from the
hard-concrete distribution (Louizos, Welling & Kingma, *Learning Sparse Neural Networks
through L0 Regularization*, ICLR 2018): with u ~ U(0, 1),

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta),  z = clamp(s (zeta - gamma) + gamma, 0, 1)

(beta = 2/3, gamma = -0.1, zeta = 1.1), so z is exactly 0 or 1 with non-zero probability
and still differentiable in log_alpha. The network computes with w * z; the trained
weights stay frozen and only log_alpha learns, as in the robust-PLM-tickets paper the
issue follows. The expected share of open gates,
``rho = mean(sigmoid(log_alpha - beta log(-gamma / zeta)))``, is the smoothed L0 norm
over N. The loss is ``CE + lambda N rho`` (Louizos' penalty, a sum over gates), and
lambda is the multiplier of the constraint ``rho <= target_t``: after every step, log
lambda rises by log 1.1 while rho is above the target and falls as much while below
(gradient ascent on log lambda with a sign step, so it crosses orders of magnitude in tens
of steps; a fixed penalty weight would have to be tuned per model and data size). The
target ``target_t`` falls linearly from 1 to the target density over the first 60% of the
steps and then stays, so the gates close gradually. The final mask keeps the
``(1 - sparsity) N`` highest log_alpha (exactly the target count, like every other finder).

``--l0-adv W`` adds W x the cross-entropy on PGD examples of the gated network (budget
``--eps``/``--steps``): the gates are pushed toward a subnetwork that is robust, not only
accurate. Rounds: ``round_0`` dense, ``round_1`` the learned mask on the trained weights
(the paper's ticket, no retraining; its ``l0`` entry has the per-epoch trace of rho,
the goal and lambda), ``round_2`` the ticket rewound and retrained (``phase: retrain``).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ticketmark.data import DataSplits, TensorLoader
from ticketmark.errors import TicketmarkError
from ticketmark.finding.common import from_rewind, make_ticket, prepare, summary_row, train_round
from ticketmark.finding.config import FindConfig
from ticketmark.finding.layout import RunDir
from ticketmark.io import Ticket
from ticketmark.sparsity import Mask, prune_by_scores
from ticketmark.training import evaluate, seed_everything

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
DEFAULTS = {"l0_epochs": None, "l0_lr": 0.1, "l0_init": 3.0, "l0_adv": 0.0, "l0_eps": 0.1,
            "l0_steps": 3}


def l0_knobs(cfg: FindConfig) -> dict[str, Any]:
    """The finder's knobs with defaults filled in, checked."""
    k = {**DEFAULTS, **{key: v for key, v in cfg.extra.items() if key in DEFAULTS}}
    if k["l0_epochs"] is None:
        k["l0_epochs"] = cfg.train.epochs
    if int(k["l0_epochs"]) < 1:
        raise TicketmarkError(f"--l0-epochs must be >= 1, got {k['l0_epochs']}")
    if not float(k["l0_lr"]) > 0:
        raise TicketmarkError(f"--l0-lr must be positive, got {k['l0_lr']}")
    if float(k["l0_adv"]) < 0:
        raise TicketmarkError(f"--l0-adv must be >= 0, got {k['l0_adv']}")
    if float(k["l0_adv"]) > 0:
        from ticketmark.robustness.pgd import check_budget

        check_budget(float(k["l0_eps"]), int(k["l0_steps"]))
    return k


class Gates(nn.Module):
    """One hard-concrete gate per prunable weight; the weights themselves stay frozen."""

    def __init__(self, model: nn.Module, mask: Mask, init: float):
        super().__init__()
        params = dict(model.named_parameters())
        self.names = list(mask)
        self.weights = {n: params[n].detach() for n in self.names}
        self.alive = {n: mask[n] for n in self.names}
        # A little noise breaks ties: gates no step has separated must not be ranked by
        # their position (that kept whole leading channels in a first try).
        self.log_alpha = nn.ParameterList(
            [nn.Parameter(init + 0.01 * torch.randn_like(params[n])) for n in self.names])
        self.size = sum(int(mask[n].sum()) for n in self.names)

    def sample(self) -> dict[str, torch.Tensor]:
        out = {}
        for n, la in zip(self.names, self.log_alpha, strict=True):
            u = torch.rand_like(la).clamp_(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (-u).log1p() + la) / BETA)
            out[n] = (s * (ZETA - GAMMA) + GAMMA).clamp(0, 1) * self.alive[n]
        return out

    def expected(self) -> dict[str, torch.Tensor]:
        """The deterministic gates used for evaluation (the distribution's median)."""
        return {n: (torch.sigmoid(la) * (ZETA - GAMMA) + GAMMA).clamp(0, 1) * self.alive[n]
                for n, la in zip(self.names, self.log_alpha, strict=True)}

    def density(self) -> torch.Tensor:
        """Expected share of open gates among the alive weights (smoothed L0 / N)."""
        shift = BETA * math.log(-GAMMA / ZETA)
        total = sum((torch.sigmoid(la - shift) * self.alive[n]).sum()
                    for n, la in zip(self.names, self.log_alpha, strict=True))
        return total / max(self.size, 1)

    def gated(self, gates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: self.weights[n] * gates[n] for n in self.names}


class GatedNet(nn.Module):
    """The model computing with gated weights (for PGD, which calls a module)."""

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.weights, (x,))


def learn_mask(model: nn.Module, mask: Mask, data: DataSplits, cfg: FindConfig,
               knobs: dict[str, Any], progress: bool = True) -> tuple[Mask, dict[str, Any]]:
    """Learn the gates on ``model``'s (frozen) weights; return the target-sparsity mask and
    a record (trace of density and multipliers, seconds)."""
    from ticketmark.training.progress import progress_bar

    seed_everything(cfg.train.seed)
    start = time.perf_counter()
    for p in model.parameters():
        p.requires_grad_(False)
    gates = Gates(model, mask, float(knobs["l0_init"]))
    target = 1.0 - cfg.sparsity
    lam, quad, lam_rate = 0.0, 5.0, 0.02
    opt = torch.optim.Adam(gates.parameters(), lr=float(knobs["l0_lr"]))
    adv_weight = float(knobs["l0_adv"])
    space = None
    if adv_weight > 0:
        from ticketmark.robustness.pgd import pgd
        from ticketmark.robustness.pixels import PixelSpace

        space = PixelSpace.of(data)
        gen = torch.Generator().manual_seed(cfg.train.seed + 7)
    loader = TensorLoader(data.train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                          augment=data.augment if cfg.train.augment is None else
                          cfg.train.augment)
    epochs = int(knobs["l0_epochs"])
    anneal = max(1, int(0.6 * epochs * len(loader)))
    trace = []
    t = 0
    model.train()
    with progress_bar(progress) as bar:
        task = bar.add_task("learn mask (L0)", total=epochs * len(loader), status="")
        for epoch in range(1, epochs + 1):
            loader.set_epoch(epoch)
            for x, y in loader:
                weights = gates.gated(gates.sample())
                logits = functional_call(model, weights, (x,))
                loss = F.cross_entropy(logits, y)
                if space is not None:
                    net = GatedNet(model, {k: v.detach() for k, v in weights.items()})
                    xa = pgd(net, x, y, space, float(knobs["l0_eps"]), int(knobs["l0_steps"]),
                             generator=gen)
                    loss = loss + adv_weight * F.cross_entropy(
                        functional_call(model, weights, (xa,)), y)
                goal = 1.0 - (1.0 - target) * min(1.0, (t + 1) / anneal)
                rho_t = gates.density()
                gap = rho_t - goal
                total = loss + gates.size * (lam * gap + quad * gap * gap)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                t += 1
                rho = rho_t.item()
                lam += lam_rate * (rho - goal)  # ascent: the multiplier of rho = goal
                bar.update(task, advance=1,
                           status=f"epoch {epoch}/{epochs} loss {loss.item():.3f} rho {rho:.3f}")
            with torch.no_grad():
                net = GatedNet(model, gates.gated(gates.expected()))
                val_acc, _ = evaluate(net, data.val)
                density = float(gates.density())
            trace.append({"epoch": epoch, "expected_density": density, "goal": goal,
                          "lambda": lam, "val_acc_gated": val_acc})
    for p in model.parameters():
        p.requires_grad_(True)
    scores = {n: la.detach() for n, la in zip(gates.names, gates.log_alpha, strict=True)}
    final = prune_by_scores(mask, scores, cfg.sparsity, "global")
    opened = sum(int(((g > 0) & mask[n]).sum()) for n, g in gates.expected().items())
    record = {"trace": trace, "seconds": time.perf_counter() - start,
              "gates_open_at_end": opened / max(gates.size, 1), "knobs": knobs}
    return final, record


def run_l0(cfg: FindConfig, out: str | Path, progress: bool = True) -> Ticket:
    """Dense run, learned mask (round 1), rewind and retrain (round 2)."""
    cfg.validate()
    if cfg.method != "l0":
        raise TicketmarkError(f"L0 finder got method {cfg.method!r}")
    knobs = l0_knobs(cfg)
    data, model = prepare(cfg)
    run = RunDir(out)
    run.start(cfg)
    rows = []
    dense = run.finished_round(0)
    if dense is None:
        mask = Mask.ones(model, cfg.policy)
        result = train_round(cfg, data, model, mask, run, 0, rewind_epoch=cfg.rewind_epoch,
                             progress=progress, desc="round 0 (dense)")
        dense = make_ticket(cfg, data, model, mask, result.rewind_state, round=0,
                            metrics=result.metrics)
        run.save_round(0, dense)
    rows.append(summary_row(0, dense, cfg.train.epochs))
    learned = run.finished_round(1)
    if learned is None:
        trained = dense.build()
        mask, record = learn_mask(trained, dense.mask, data, cfg, knobs, progress)
        gated = copy.deepcopy(trained)
        mask.apply(gated)
        test_acc, _ = evaluate(gated, data.test)
        val_acc, _ = evaluate(gated, data.val)
        learned = make_ticket(cfg, data, gated, mask, dense.rewind, round=1, phase="mask",
                              l0=record, metrics=[{"val_acc": val_acc, "test_acc": test_acc,
                                                   "phase": "mask"}])
        run.save_round(1, learned)
    rows.append({**summary_row(1, learned, int(knobs["l0_epochs"])), "phase": "mask"})
    ticket = run.finished_round(2)
    if ticket is None:
        retrain = from_rewind(model, dense.rewind, learned.mask)
        result = train_round(cfg, data, retrain, learned.mask, run, 2, progress=progress)
        ticket = make_ticket(cfg, data, retrain, learned.mask, dense.rewind, round=2,
                             phase="retrain", metrics=result.metrics)
        run.save_round(2, ticket)
    rows.append({**summary_row(2, ticket, cfg.train.epochs), "phase": "retrain"})
    run.finish(ticket, rows)
    return ticket
