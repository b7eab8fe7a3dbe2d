"""Robustness of several tickets (and their dense networks) side by side, with a plot.

All models of one report must be for the same dataset and input shape: they are measured on
the same test images, the same PGD seeds and the same corrupted copies, so a difference in
a row is a difference of the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ticketmark.data import DataSplits, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket, atomic_write_json, load_ticket
from ticketmark.robustness.evaluate import RobustnessOptions, measure


def load_models(tickets: Sequence[str | Path], dense: Sequence[str | Path],
                data_dir: str | Path | None = None
                ) -> tuple[list[tuple[str, str, Ticket]], DataSplits]:
    """[(role, path, ticket)] checked against one dataset, which is loaded once."""
    entries = [("dense", str(p), load_ticket(p)) for p in dense]
    entries += [("ticket", str(p), load_ticket(p)) for p in tickets]
    if not entries:
        raise TicketmarkError("give at least one --ticket")
    first = entries[0][2]
    for _, path, t in entries[1:]:
        if (t.dataset, t.in_channels, t.image_size, t.num_classes) != (
                first.dataset, first.in_channels, first.image_size, first.num_classes):
            raise TicketmarkError(f"{path} is for {t.dataset}, {entries[0][1]} for "
                                  f"{first.dataset}: a report compares one dataset")
    data = load_dataset(first.dataset, data_dir)
    if (data.in_channels, data.image_size, data.num_classes) != (
            first.in_channels, first.image_size, first.num_classes):
        raise TicketmarkError(f"dataset {first.dataset} does not match the tickets' input "
                              f"shape or classes")
    return entries, data


def robustness_report(tickets: Sequence[str | Path], dense: Sequence[str | Path],
                      opts: RobustnessOptions, data_dir: str | Path | None = None
                      ) -> dict[str, Any]:
    opts.validate()
    entries, data = load_models(tickets, dense, data_dir)
    rows = []
    for role, path, ticket in entries:
        row = {"role": role, "path": path, "model": ticket.model_name,
               "sparsity": ticket.mask.sparsity(),
               "adversarial": (ticket.meta.get("train") or {}).get("adversarial")}
        row.update(measure(ticket.build(), data, opts))
        rows.append(row)
    return {"dataset": data.name, "options": opts.to_dict(), "rows": rows,
            "eps_units": "[0, 1] pixel units (inputs normalised per channel; eps / std "
                         "in normalised units)"}


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out/robustness.json`` and ``out/robustness_vs_sparsity.png``."""
    from ticketmark.robustness.plots import plot_robustness_vs_sparsity

    out = Path(out)
    atomic_write_json(out / "robustness.json", report, sort_keys=False)
    png = plot_robustness_vs_sparsity(report["rows"], out / "robustness_vs_sparsity.png",
                                      title=f"Robustness vs sparsity ({report['dataset']})")
    return out / "robustness.json", png


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells for a console table: one row per model."""
    eps = [str(e) for e in report["options"]["eps"]]
    header = ["role", "model", "sparsity", "clean"] + [f"PGD {e}" for e in eps]
    first = report["rows"][0]
    if "autoattack_apgd" in first:
        header += [f"APGD {e}" for e in eps]
    if "corruption_mean" in first:
        header.append("corrupt. mean")
    cells = []
    for r in report["rows"]:
        line = [r["role"], r["model"], f"{100 * r['sparsity']:.1f}%", f"{r['clean']:.2f}"]
        line += [f"{r['pgd'][e]:.2f}" for e in eps]
        if "autoattack_apgd" in r:
            line += [f"{r['autoattack_apgd'][e]:.2f}" for e in eps]
        if "corruption_mean" in r:
            line.append(f"{r['corruption_mean']:.2f}")
        cells.append(line)
    return header, cells
