"""``ticketmark find``: search for a ticket with IMP or a faster finder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError

FINDERS = ("imp", "omp", "early-bird", "colt", "random", "l0")


def finder(method: str) -> Callable[..., Any]:
    """The finder behind ``--method`` (imported here: the finders load torch)."""
    from ticketmark.finding import run_imp, run_oneshot
    from ticketmark.finding.colt import run_colt
    from ticketmark.finding.early_bird import run_early_bird
    from ticketmark.finding.l0 import run_l0

    return {"imp": run_imp, "omp": run_oneshot, "early-bird": run_early_bird,
            "colt": run_colt, "random": run_oneshot, "l0": run_l0}[method]


@app.command()
def find(
    out: Path = typer.Option(..., "--out", help="run directory (resumed if it exists)"),
    method: str = typer.Option("imp", help=f"finder: {', '.join(FINDERS)}"),
    model: str = typer.Option("conv4", help="architecture (see 'ticketmark info --models')"),
    dataset: str = typer.Option("mnist5k", help="digits, mnist5k, cifar10, cifar100, mnist, "
                                                 "fashion-mnist, imagefolder"),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
    rounds: int = typer.Option(5, help="IMP rounds after the dense one"),
    rate: float = typer.Option(0.2, help="fraction of remaining weights pruned per round "
                                         "(IMP) or per copy and cycle (COLT)"),
    sparsity: float = typer.Option(0.8, help="target sparsity (omp, early-bird, colt, random, "
                                             "l0)"),
    rewind_epoch: int = typer.Option(0, help="rewind to the weights after this many epochs"),
    scope: str = typer.Option("global", help="magnitude pruning scope: global or layer"),
    prune_conv1: bool = typer.Option(False, help="also prune the stem convolution"),
    prune_linear: bool = typer.Option(False, help="also prune Linear layers"),
    epochs: int = typer.Option(10, help="training epochs per round"),
    batch_size: int = typer.Option(128),
    lr: float | None = typer.Option(None, help="learning rate (default: per model family)"),
    momentum: float = typer.Option(0.9),
    weight_decay: float = typer.Option(5e-4),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    epsilon: float = typer.Option(0.1, help="early-bird: stop when masks differ by less than "
                                            "this fraction of positions"),
    window: int = typer.Option(5, help="early-bird: masks in the FIFO window, newest included"),
    check_every: int = typer.Option(1, help="early-bird: draw a mask every N epochs (or steps)"),
    check_unit: str = typer.Option("epoch", help="early-bird: unit of --check-every, epoch or "
                                                  "step"),
    max_search_epochs: int | None = typer.Option(None, help="early-bird: cap on dense search "
                                                             "epochs (default: --epochs)"),
    structured: bool = typer.Option(False, help="early-bird: prune whole channels, not weights"),
    channel_score: str = typer.Option("auto", help="early-bird --structured: bn (BatchNorm "
                                                   "gamma), l1 (filter mean |w| over its "
                                                   "layer's mean) or auto"),
    min_channels: float = typer.Option(0.1, help="early-bird --structured: share of each "
                                                 "layer's channels that is never pruned"),
    splits: int = typer.Option(2, help="colt: disjoint parts of the training data"),
    l0_epochs: int | None = typer.Option(None, help="l0: epochs of mask learning (default: "
                                                    "--epochs)"),
    l0_lr: float = typer.Option(0.1, help="l0: Adam learning rate of the gates"),
    l0_adv: float = typer.Option(0.0, help="l0: weight of the PGD loss while the mask is "
                                           "learnt (budget --eps, --steps; 0: off)"),
    adversarial: str | None = typer.Option(None, help="adversarial training in every round: "
                                                      "pgd, or fgsm (one random-start step)"),
    eps: float = typer.Option(0.1, help="--adversarial: L-inf budget in [0, 1] pixel units "
                                        "(inputs are normalised; eps is divided by the std)"),
    steps: int = typer.Option(7, help="--adversarial pgd: attack steps per batch"),
    adv_alpha: float | None = typer.Option(None, help="--adversarial pgd: step size in pixel "
                                                      "units (default 2.5 eps / steps)"),
    adv_ramp_steps: int = typer.Option(0, help="--adversarial: grow eps linearly over the "
                                               "first N optimizer steps of each training run"),
) -> None:
    """Find a winning ticket and write every round into a resumable run directory."""
    if method not in FINDERS:
        raise TicketmarkError(f"unknown finder {method!r}; choose one of: {', '.join(FINDERS)}")
    from ticketmark.finding import FindConfig
    from ticketmark.training import TrainConfig
    from ticketmark.training.progress import console

    train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, seed=seed, device=device,
                        adversarial=None if adversarial is None else
                        {"method": adversarial, "eps": eps, "steps": steps, "alpha": adv_alpha}
                        | ({"ramp_steps": adv_ramp_steps} if adv_ramp_steps else {}))
    cfg = FindConfig(method=method, model=model, dataset=dataset,
                     data_dir=str(data_dir) if data_dir else None, rounds=rounds, rate=rate,
                     sparsity=sparsity, rewind_epoch=rewind_epoch, scope=scope,
                     include_stem=prune_conv1, include_linear=prune_linear, train=train)
    # Only the chosen finder's knobs go into hparams.json, so a resumed run of one finder
    # is not refused over a flag it never reads.
    if method == "early-bird":
        cfg.extra = {"epsilon": epsilon, "window": window, "check_every": check_every,
                     "check_unit": check_unit, "structured": structured,
                     "channel_score": channel_score, "max_search_epochs": max_search_epochs}
        if structured:  # recorded, so a run drawn with another floor is not resumed
            cfg.extra["min_channels"] = min_channels
    elif method == "colt":
        cfg.extra = {"splits": splits}
    elif method == "l0":
        cfg.extra = {"l0_epochs": l0_epochs, "l0_lr": l0_lr, "l0_adv": l0_adv}
        if l0_adv > 0:  # recorded only when used, so a clean run resumes whatever --eps says
            cfg.extra |= {"l0_eps": eps, "l0_steps": steps}
    try:
        ticket = finder(method)(cfg.validate(), out, progress=not quiet)
    except KeyboardInterrupt:  # Typer would exit 130 silently; say what survives
        console.print(f"interrupted: finished rounds are kept in {out}; run the same command "
                      "again to resume from there", soft_wrap=True)
        raise typer.Exit(130) from None
    acc = ticket.meta.get("metrics", [{}])[-1].get("test_acc", float("nan"))
    console.print(f"ticket: {out / 'ticket.safetensors'}  sparsity "
                  f"{100 * ticket.mask.sparsity():.1f}%  test accuracy {acc:.2f}%")
