"""The run-directory layout every finder writes, so every later command reads any ticket.

    RUN/hparams.json          the FindConfig (a resumed run must match it)
    RUN/round_R/ticket.*      each round's mask, rewind and trained weights, metrics
    RUN/round_R/metrics.jsonl per-epoch metrics of that round
    RUN/summary.json          one row per round: sparsity, accuracy, epochs spent
    RUN/ticket.*              the final ticket
    RUN/accuracy_vs_sparsity.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.finding.config import FindConfig
from ticketmark.io import Ticket, atomic_write_json, load_ticket, save_ticket
from ticketmark.training.distributed import barrier, dist_env


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def round_dir(self, r: int) -> Path:
        return self.root / f"round_{r}"

    def round_ticket(self, r: int) -> Path:
        return self.round_dir(r) / "ticket.safetensors"

    @property
    def final_ticket(self) -> Path:
        return self.root / "ticket.safetensors"

    def start(self, cfg: FindConfig) -> None:
        """Create the run, or check that an existing one was started with the same config."""
        hp = self.root / "hparams.json"
        wanted = cfg.to_dict()
        if hp.is_file():
            try:
                have = json.loads(hp.read_text())
            except json.JSONDecodeError:
                raise TicketmarkError(f"{hp} is corrupt; remove the run directory") from None
            if have != json.loads(json.dumps(wanted)):
                diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
                raise TicketmarkError(
                    f"{self.root} holds a run with other settings ({', '.join(diff)}); "
                    "use another --out or the same flags to resume"
                )
        elif dist_env().is_main:
            atomic_write_json(hp, wanted)
        barrier()

    def read_metrics(self, r: int) -> list[dict[str, Any]]:
        path = self.round_dir(r) / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def finished_round(self, r: int) -> Ticket | None:
        """The round's ticket if that round completed (both files readable), else None."""
        return load_if_finished(self.round_ticket(r))

    def save_round(self, r: int, ticket: Ticket) -> None:
        if dist_env().is_main:
            save_ticket(self.round_ticket(r), ticket)
        barrier()

    def finish(self, ticket: Ticket, rows: list[dict[str, Any]]) -> None:
        if dist_env().is_main:
            from ticketmark.report.plots import (
                plot_accuracy_vs_sparsity,
                plot_layer_density,
                plot_training_curves,
            )

            save_ticket(self.final_ticket, ticket)
            atomic_write_json(self.root / "summary.json", {"rounds": rows})
            plot_accuracy_vs_sparsity(rows, self.root / "accuracy_vs_sparsity.png")
            plot_layer_density(ticket.mask.layer_density(), self.root / "layer_density.png")
            curves = {f"round {r['round']} ({100 * r['sparsity']:.0f}%)":
                      self.read_metrics(r["round"]) for r in rows}
            plot_training_curves(curves, self.root / "training_curves.png")
        barrier()


def load_if_finished(path: Path) -> Ticket | None:
    """The ticket at ``path`` if it was written completely, else None (a killed run)."""
    if not path.is_file():
        return None
    try:
        return load_ticket(path)
    except TicketmarkError:
        return None


def round_row(r: int, ticket: Ticket, epochs: int) -> dict[str, Any]:
    final = ticket.meta.get("metrics", [{}])[-1] if ticket.meta.get("metrics") else {}
    return {"round": r, "sparsity": ticket.mask.sparsity(), "density": ticket.mask.density(),
            "test_acc": final.get("test_acc"), "val_acc": final.get("val_acc"),
            "epochs": epochs}
