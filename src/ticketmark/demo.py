"""The demo story, step by step, on embedded data only."""

from __future__ import annotations

from pathlib import Path

from ticketmark.finding import FindConfig, run_imp
from ticketmark.training import TrainConfig
from ticketmark.training.progress import console


def run_demo(out: str | Path, fast: bool = False, progress: bool = True) -> dict:
    out = Path(out)
    if fast:
        cfg = FindConfig(model="conv2", dataset="digits", rounds=2, rate=0.5,
                         train=TrainConfig(epochs=3, batch_size=64))
    else:
        cfg = FindConfig(model="conv4", dataset="mnist5k", rounds=5, rate=0.2,
                         train=TrainConfig(epochs=6))
    console.rule("[bold]1. Find a winning ticket (IMP with rewinding)")
    ticket = run_imp(cfg, out / "find", progress=progress)
    acc = ticket.meta["metrics"][-1]["test_acc"]
    console.print(f"ticket: {100 * ticket.mask.sparsity():.1f}% sparse, test accuracy "
                  f"{acc:.2f}%  ->  {out / 'find' / 'ticket.safetensors'}")
    return {"ticket": str(out / "find" / "ticket.safetensors"), "test_acc": acc,
            "sparsity": ticket.mask.sparsity()}
