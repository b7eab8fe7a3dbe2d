"""``ticketmark transfer`` and ``ticketmark unpair``: the sibling risk of a released ticket."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.errors import TicketmarkError
from ticketmark.io import atomic_write_json
from ticketmark.training.progress import console


def _pair(released: Path, private: Path, data_dir: Path | None):  # noqa: ANN202
    from ticketmark.robustness.report import load_models

    entries, data = load_models([released], [private], data_dir)
    return entries[1][2], entries[0][2], data


def _line(name: str, t: dict) -> str:
    return (f"{name}: transfer rate {t['transfer_rate']:.1f}% of the released ticket's "
            f"{t['white_box_hits']} successful PGD examples (white-box success "
            f"{t['white_box_success']:.1f}%); "
            f"private model fooled on {t['private_fooled']:.1f}% of the {t['both_correct']} "
            f"images both classify correctly "
            f"(random sign noise of the same eps: {t['random_noise_fooled']:.1f}%)")


@app.command()
def transfer(
    released: Path = typer.Option(..., "--released", help="the published ticket"),
    private: Path = typer.Option(..., "--private", help="the owner's private model "
                                                        "(a ticket file, e.g. the dense one)"),
    eps: float = typer.Option(0.1, help="L-inf budget in [0, 1] pixel units"),
    steps: int = typer.Option(20, help="PGD steps on the released ticket"),
    restarts: int = typer.Option(1),
    limit: int | None = typer.Option(1000, help="first N test images"),
    seed: int = typer.Option(0),
    data_dir: Path | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """How often PGD examples crafted on the released ticket fool the private model."""
    from ticketmark.robustness.transfer import TransferOptions, measure_transfer

    opts = TransferOptions(eps, steps, restarts, limit, seed).validate()
    rel, priv, data = _pair(released, private, data_dir)
    stats = measure_transfer(rel.build(), priv.build(), data, opts)
    if as_json:
        print(json.dumps(stats, indent=2))
    else:
        print(_line("transfer", stats))


@app.command()
def unpair(
    released: Path = typer.Option(..., "--released", help="the ticket to publish"),
    private: Path = typer.Option(..., "--private", help="the owner's private model"),
    out: Path = typer.Option(..., "--out", help="unpaired ticket (.safetensors + .json)"),
    epochs: int = typer.Option(3, help="fine-tuning epochs"),
    weight: float = typer.Option(1.0, help="weight of the gradient-alignment penalty"),
    lr: float = typer.Option(0.01),
    max_drop: float = typer.Option(1.0, help="validation accuracy the fine-tuning may cost "
                                             "(points); the best epoch within it is kept"),
    eps: float = typer.Option(0.1, help="L-inf budget in [0, 1] pixel units"),
    steps: int = typer.Option(20, help="PGD steps of the before/after transfer measurement"),
    limit: int | None = typer.Option(1000, help="first N test images for before/after"),
    seed: int = typer.Option(0),
    data_dir: Path | None = typer.Option(None),
    report: Path | None = typer.Option(None, help="write the before/after record (JSON)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fine-tune the released ticket so its adversarial examples transfer less, then
    report transfer and accuracy before and after on the test split."""
    from ticketmark.robustness.transfer import TransferOptions, measure_transfer
    from ticketmark.robustness.unpair import UnpairOptions
    from ticketmark.robustness.unpair import unpair as run_unpair
    from ticketmark.training import evaluate

    if report is not None and report.suffix != ".json":
        raise TicketmarkError(f"--report must name a .json file, got {report}")
    topts = TransferOptions(eps, steps, 1, limit, seed).validate()
    uopts = UnpairOptions(epochs=epochs, weight=weight, lr=lr, max_drop=max_drop, eps=eps,
                          steps=min(steps, 10), seed=seed).validate()
    rel, priv, data = _pair(released, private, data_dir)
    private_model = priv.build()
    before = measure_transfer(rel.build(), private_model, data, topts)
    before["test_acc"] = evaluate(rel.build(), data.test)[0]
    from ticketmark.io import save_ticket

    new, record = run_unpair(rel, private_model, data, uopts, progress=not quiet)
    after = measure_transfer(new.build(), private_model, data, topts)
    after["test_acc"] = record["test_acc"]
    result = {"released": str(released), "private": str(private), "before": before,
              "after": after, "accuracy_cost": before["test_acc"] - after["test_acc"],
              "unpair": record}
    if report is not None:
        atomic_write_json(report, result, sort_keys=False)
    path = save_ticket(out, new)
    print(_line("before", before) + f"; test accuracy {before['test_acc']:.2f}%")
    print(_line("after ", after) + f"; test accuracy {after['test_acc']:.2f}%")
    kept = record["kept_epoch"]
    console.print(f"wrote {path} (kept epoch {kept}"
                  f"{'' if record['changed'] else ': no epoch reduced transfer within the bound'})")
