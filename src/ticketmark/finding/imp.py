"""Iterative magnitude pruning with rewinding, the paper's recipe, resumable per round.

Round 0 trains the dense network and keeps its weights at the rewind epoch k (k=0: the
original LTH reset). Each later round prunes ``rate`` of the remaining weights by global
magnitude from the previous round's trained weights, rewinds the survivors to epoch k and
trains again. A round counts as finished once its ticket is on disk; a rerun with the same
flags skips finished rounds.
"""

from __future__ import annotations

from pathlib import Path

from ticketmark.finding.common import from_rewind, make_ticket, prepare, summary_row, train_round
from ticketmark.finding.config import FindConfig
from ticketmark.finding.layout import RunDir
from ticketmark.io import Ticket
from ticketmark.sparsity import Mask, magnitude_prune
from ticketmark.training.progress import console


def run_imp(cfg: FindConfig, out: str | Path, progress: bool = True) -> Ticket:
    cfg.validate()
    data, model = prepare(cfg)  # fails on bad names or data before anything is written
    run = RunDir(out)
    run.start(cfg)
    rows = []
    previous: Ticket | None = None
    for r in range(cfg.rounds + 1):
        done = run.finished_round(r)
        if done is not None:
            if progress:
                console.print(f"[dim]round {r}: already finished "
                              f"({100 * done.mask.sparsity():.1f}% sparse), skipping")
            previous = done
            rows.append(summary_row(r, done, cfg.train.epochs))
            continue
        if previous is None:  # round 0: dense training, capture the rewind point
            mask = Mask.ones(model, cfg.policy)
            result = train_round(cfg, data, model, mask, run, r, rewind_epoch=cfg.rewind_epoch,
                                 progress=progress, desc="round 0 (dense)")
            rewind = result.rewind_state
        else:
            trained = previous.build()
            mask = magnitude_prune(trained, previous.mask, cfg.rate, cfg.scope)
            rewind = previous.rewind
            model = from_rewind(model, rewind, mask)
            result = train_round(cfg, data, model, mask, run, r, progress=progress)
        ticket = make_ticket(cfg, data, model, mask, rewind, round=r, metrics=result.metrics)
        run.save_round(r, ticket)
        rows.append(summary_row(r, ticket, result.epochs_run))
        previous = ticket
    assert previous is not None
    run.finish(previous, rows)
    return previous
