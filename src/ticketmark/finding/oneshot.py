"""One-shot finders: magnitude pruning after one dense run (OMP), and random pruning.

Both prune straight to the target sparsity, rewind to epoch k and retrain; they are the
cheap baselines every other finder is measured against.
"""

from __future__ import annotations

from pathlib import Path

from ticketmark.errors import TicketmarkError
from ticketmark.finding.common import from_rewind, make_ticket, prepare, summary_row, train_round
from ticketmark.finding.config import FindConfig
from ticketmark.finding.layout import RunDir
from ticketmark.io import Ticket
from ticketmark.sparsity import Mask, magnitude_prune, random_prune


def run_oneshot(cfg: FindConfig, out: str | Path, progress: bool = True) -> Ticket:
    cfg.validate()
    if cfg.method not in {"omp", "random"}:
        raise TicketmarkError(f"one-shot finder got method {cfg.method!r}")
    data, model = prepare(cfg)  # fails on bad names or data before anything is written
    run = RunDir(out)
    run.start(cfg)
    dense = run.finished_round(0)
    rows = []
    if dense is None:
        mask = Mask.ones(model, cfg.policy)
        # The random baseline needs only the rewind point, not a trained dense net.
        epochs = cfg.train.epochs if cfg.method == "omp" else cfg.rewind_epoch
        result = train_round(cfg, data, model, mask, run, 0, rewind_epoch=cfg.rewind_epoch,
                             progress=progress, desc="round 0 (dense)", epochs=epochs)
        dense = make_ticket(cfg, data, model, mask, result.rewind_state, round=0,
                            metrics=result.metrics)
        run.save_round(0, dense)
        rows.append(summary_row(0, dense, result.epochs_run))
    else:
        rows.append(summary_row(0, dense, dense.meta.get("epochs_run", cfg.train.epochs)))
    ticket = run.finished_round(1)
    if ticket is None:
        if cfg.method == "omp":
            mask = magnitude_prune(dense.build(), dense.mask, cfg.sparsity, cfg.scope)
        else:
            mask = random_prune(dense.mask, cfg.sparsity, seed=cfg.train.seed, scope=cfg.scope)
        model = from_rewind(model, dense.rewind, mask)
        result = train_round(cfg, data, model, mask, run, 1, progress=progress)
        ticket = make_ticket(cfg, data, model, mask, dense.rewind, round=1,
                             metrics=result.metrics)
        run.save_round(1, ticket)
        rows.append(summary_row(1, ticket, result.epochs_run))
    else:
        rows.append(summary_row(1, ticket, cfg.train.epochs))
    run.finish(ticket, rows)
    return ticket
