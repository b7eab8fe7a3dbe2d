"""``ticketmark attack``: the thief's toolbox on a ticket file, one attack or a sweep.

Every command reads ``--in``, writes the stolen ticket to ``--out`` (only after the attack
succeeded) and prints accuracy before/after; ``sweep`` writes a table instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ticketmark.cli.app import UncutGroup, app
from ticketmark.cli.options import ForceOpt, refuse_overwrite, ticket_files
from ticketmark.errors import TicketmarkError

if TYPE_CHECKING:  # the attacks, data and tickets load torch: imported when a command runs
    from ticketmark.data import DataSplits
    from ticketmark.io import Ticket


class _AttackGroup(UncutGroup):
    """Names an unknown attack in the project's own words (the CLI prints one line)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            from ticketmark.attacks import ATTACKS

            raise TicketmarkError(f"unknown attack {args[0]!r}; choose one of: "
                                  f"{', '.join([*ATTACKS, 'sweep'])}")
        return super().resolve_command(ctx, args)


attack_app = typer.Typer(
    cls=_AttackGroup,
    help="Attack a ticket as a thief would (fine-tune, prune, quantize, noise, fill, "
         "permute, distill) or sweep a plan of attacks into one table.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(attack_app, name="attack")

InOpt = typer.Option(..., "--in", help="the owner's ticket (.safetensors) or run directory")
OutOpt = typer.Option(..., "--out", help="where to write the stolen ticket")
DatasetOpt = typer.Option(None, "--dataset", help="evaluation / thief data (default: the "
                                                  "ticket's dataset)")
DataDirOpt = typer.Option(None, "--data-dir", help="folder for datasets read from disk")
SeedOpt = typer.Option(0, "--seed")
RecalOpt = typer.Option(1024, "--recalibrate", help="then re-estimate BatchNorm statistics "
                                                    "on this many thief images (0: off)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")
DeviceOpt = typer.Option("auto", "--device", help="where the attack trains: auto, cpu, cuda, "
                                                  "cuda:1 ...")


def _data(ticket: Ticket, dataset: str | None, data_dir: Path | None) -> DataSplits:
    from ticketmark.data import load_dataset

    return load_dataset(dataset or ticket.dataset, data_dir)


def _run(source: Path, out: Path, kind: str, params: dict[str, Any], dataset: str | None,
         data_dir: Path | None, quiet: bool, force: bool, device: str = "auto") -> None:
    from ticketmark.attacks import apply_attack
    from ticketmark.io import load_ticket, resolve_ticket_path, save_ticket
    from ticketmark.training.progress import console

    if resolve_ticket_path(out) == resolve_ticket_path(source):
        raise TicketmarkError("--out is the input ticket; write the stolen ticket elsewhere")
    refuse_overwrite(ticket_files(out), force)
    ticket = load_ticket(source)
    stolen = apply_attack(ticket, kind, params, _data(ticket, dataset, data_dir),
                          progress=not quiet, device=device)
    path = save_ticket(out, stolen)
    h = stolen.meta["history"][-1]
    bits = f", {h['effective_bits']:.2f} effective bits" if "effective_bits" in h else ""
    console.print(f"{kind}: test accuracy {h['acc_before']:.2f}% -> {h['acc_after']:.2f}%, "
                  f"sparsity {100 * stolen.mask.sparsity():.1f}%{bits}; stolen ticket: {path}",
                  soft_wrap=True)


@attack_app.command()
def finetune(
    source: Path = InOpt, out: Path = OutOpt,
    epochs: int = typer.Option(5, help="fine-tuning epochs"),
    lr: float | None = typer.Option(None, help="learning rate (default 0.01)"),
    mode: str = typer.Option("all", help="all, last (classifier only), reinit-last"),
    keep_mask: bool = typer.Option(False, "--keep-mask/--dense",
                                   help="keep pruned weights at zero (default: dense)"),
    thief_fraction: float = typer.Option(0.5, help="share of the training split the thief "
                                                   "owns (disjoint from the owner's)"),
    batch_size: int = typer.Option(128),
    adversarial_eps: float = typer.Option(0.0, help="> 0: PGD adversarial fine-tuning at "
                                                    "this L-inf eps (pixel units)"),
    adversarial_steps: int = typer.Option(7, help="PGD steps of adversarial fine-tuning"),
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    seed: int = SeedOpt, quiet: bool = QuietOpt, force: bool = ForceOpt,
    device: str = DeviceOpt,
) -> None:
    """Fine-tune on the thief's own data: all layers, last layer, or re-initialised last."""
    _run(source, out, "finetune", {"epochs": epochs, "lr": lr, "mode": mode,
                                   "keep_mask": keep_mask, "thief_fraction": thief_fraction,
                                   "batch_size": batch_size, "seed": seed,
                                   "adversarial_eps": adversarial_eps,
                                   "adversarial_steps": adversarial_steps},
         dataset, data_dir, quiet, force, device)


@attack_app.command()
def prune(
    source: Path = InOpt, out: Path = OutOpt,
    ratio: float = typer.Option(..., help="fraction of the remaining weights to remove, "
                                          "in [0, 1)"),
    method: str = typer.Option("global", help="global or layer magnitude, or random"),
    finetune_epochs: int = typer.Option(0, help="then fine-tune with the new mask kept"),
    lr: float | None = typer.Option(None, help="fine-tuning learning rate"),
    thief_fraction: float = typer.Option(0.5),
    recalibrate: int = RecalOpt,
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    seed: int = SeedOpt, quiet: bool = QuietOpt, force: bool = ForceOpt,
    device: str = DeviceOpt,
) -> None:
    """Prune further (magnitude or random), optionally followed by fine-tuning."""
    from ticketmark.attacks.common import check_fraction

    check_fraction(ratio, "prune ratio")
    _run(source, out, "prune", {"ratio": ratio, "method": method, "seed": seed,
                                "finetune_epochs": finetune_epochs, "lr": lr,
                                "thief_fraction": thief_fraction, "recalibrate": recalibrate},
         dataset, data_dir, quiet, force, device)


@attack_app.command()
def quantize(
    source: Path = InOpt, out: Path = OutOpt,
    scheme: str = typer.Option("int8", help="int8, int8-channel or ternary"),
    threshold: float = typer.Option(0.7, help="ternary: threshold x mean |w|"),
    recalibrate: int = RecalOpt,
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    quiet: bool = QuietOpt, force: bool = ForceOpt,
) -> None:
    """Quantize every Conv/Linear weight (symmetric int8 or ternary); reports the bits."""
    _run(source, out, "quantize", {"scheme": scheme, "threshold": threshold,
                                   "recalibrate": recalibrate}, dataset, data_dir, quiet, force)


@attack_app.command()
def noise(
    source: Path = InOpt, out: Path = OutOpt,
    sigma: float = typer.Option(0.01, help="noise std relative to each layer's weight std"),
    recalibrate: int = RecalOpt,
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    seed: int = SeedOpt, quiet: bool = QuietOpt, force: bool = ForceOpt,
) -> None:
    """Add Gaussian noise to the surviving weights."""
    _run(source, out, "noise", {"sigma": sigma, "seed": seed, "recalibrate": recalibrate},
         dataset, data_dir, quiet, force)


@attack_app.command()
def fill(
    source: Path = InOpt, out: Path = OutOpt,
    scale: float = typer.Option(0.01, help="noise std relative to the reference magnitude"),
    reference: str = typer.Option("min", help="min (smallest surviving |w|) or std"),
    recalibrate: int = RecalOpt,
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    seed: int = SeedOpt, quiet: bool = QuietOpt, force: bool = ForceOpt,
) -> None:
    """Write small noise into the pruned positions so that no weight is exactly zero."""
    _run(source, out, "fill", {"scale": scale, "reference": reference, "seed": seed,
                               "recalibrate": recalibrate}, dataset, data_dir, quiet, force)


@attack_app.command()
def permute(
    source: Path = InOpt, out: Path = OutOpt,
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    seed: int = SeedOpt, quiet: bool = QuietOpt, force: bool = ForceOpt,
) -> None:
    """Randomly permute every layer's channels without changing the model's outputs."""
    _run(source, out, "permute", {"seed": seed}, dataset, data_dir, quiet, force)


@attack_app.command()
def distill(
    source: Path = InOpt, out: Path = OutOpt,
    epochs: int = typer.Option(20, help="training epochs of the student"),
    lr: float | None = typer.Option(None, help="student learning rate, cosine schedule "
                                               "(default 0.05 with BatchNorm, else 0.01)"),
    temperature: float = typer.Option(4.0, help="softmax temperature of the soft labels"),
    alpha: float = typer.Option(1.0, help="weight of the soft-label loss (1: no labels)"),
    mask: str = typer.Option("random", help="student mask: random (teacher's per-layer "
                                            "density), same, dense"),
    thief_fraction: float = typer.Option(0.5, help="share of the training split used as "
                                                   "the transfer set"),
    batch_size: int = typer.Option(64),
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    seed: int = SeedOpt, quiet: bool = QuietOpt, force: bool = ForceOpt,
    device: str = DeviceOpt,
) -> None:
    """Train a fresh sparse student on the ticket's soft labels (nothing copied)."""
    _run(source, out, "distill", {"epochs": epochs, "lr": lr, "temperature": temperature,
                                  "alpha": alpha, "mask": mask,
                                  "thief_fraction": thief_fraction, "batch_size": batch_size,
                                  "seed": seed}, dataset, data_dir, quiet, force, device)


@attack_app.command()
def sweep(
    source: Path = InOpt,
    plan: Path = typer.Option(..., "--plan", help="attack plan (.toml or .json)"),
    out: Path = typer.Option(..., "--out", help="folder for sweep.csv, sweep.md, sweep.json"),
    save_tickets: bool = typer.Option(False, "--save-tickets",
                                      help="also keep every stolen ticket under OUT/tickets"),
    column: list[str] = typer.Option([], "--column", help="extra registered column"),
    dataset: str | None = DatasetOpt, data_dir: Path | None = DataDirOpt,
    quiet: bool = QuietOpt, force: bool = ForceOpt, device: str = DeviceOpt,
) -> None:
    """Run a plan of attacks at several strengths; write one accuracy table."""
    from ticketmark.attacks.sweep import load_plan, run_sweep
    from ticketmark.io import load_ticket
    from ticketmark.training.progress import console

    refuse_overwrite([out / name for name in ("sweep.csv", "sweep.md", "sweep.json")], force)
    rows = load_plan(plan)
    ticket = load_ticket(source)
    data = _data(ticket, dataset, data_dir)

    def show(cells: dict[str, Any]) -> None:
        if not quiet:
            console.print(f"{cells['attack']} {cells['params']}: "
                          f"{cells['acc_before']:.2f}% -> {cells['acc_after']:.2f}%",
                          soft_wrap=True)

    result = run_sweep(ticket, rows, data, out, columns=column, save_tickets=save_tickets,
                       progress=False, on_row=show, device=device)
    print(result.markdown(), end="")
    console.print(f"table: {out / 'sweep.md'} and {out / 'sweep.csv'}", soft_wrap=True)
