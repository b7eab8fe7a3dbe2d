"""A robustness sweep: a plan of attacks at several strengths -> one table (CSV + Markdown).

A plan is TOML or JSON (YAML too when PyYAML is installed)::

    [[attack]]
    kind = "prune"
    method = ["global", "random"]   # a list sweeps: one row per combination
    ratio = [0.2, 0.5, 0.8]

    [[attack]]
    kind = "finetune"
    mode = "last"
    epochs = 2

Every row attacks the original ticket (attacks do not chain). Ownership schemes add their
verdicts as extra columns with ``register_column``; the table then reads attack strength x
accuracy x verdict, which is what SPEC section 3 asks for.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketmark.attacks.apply import ATTACKS, _jsonable, apply_attack, resolve_params
from ticketmark.data import DataSplits
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket, atomic_write_json, atomic_write_text, save_ticket

# name -> fn(owner ticket, stolen ticket, stolen ticket path or None) -> cell value
Column = Callable[[Ticket, Ticket, Path | None], Any]
SWEEP_COLUMNS: dict[str, Column] = {}
# Parameters whose natural value is a list: never expanded into a sweep.
_LIST_PARAMS = {"names"}


def register_column(name: str, fn: Column) -> None:
    """Let a scheme add a column (e.g. its verdict on each stolen ticket) to sweeps."""
    SWEEP_COLUMNS[name] = fn


@dataclass
class PlanRow:
    kind: str
    params: dict[str, Any]  # as written in the plan for this row (after expansion)
    label: str = ""


@dataclass
class SweepResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _cell(row.get(k)) for k in self.columns})
        return buf.getvalue()

    def markdown(self, title: str = "") -> str:
        head = f"{title}\n\n" if title else ""
        lines = ["| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if c in ("attack", "params") else "---:"
                                for c in self.columns) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c)).replace("|", "\\|")
                                           for c in self.columns) + " |")
        return head + "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def load_plan(path: str | Path) -> list[PlanRow]:
    """Read and expand a plan file; every problem is one ``TicketmarkError`` line."""
    p = Path(path)
    if not p.is_file():
        raise TicketmarkError(f"no plan file at {p}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            raw: Any = tomllib.loads(text)
        elif p.suffix == ".json":
            raw = json.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise TicketmarkError(f"{p}: YAML plans need PyYAML; write the plan as "
                                      f".toml or .json") from None
            raw = yaml.safe_load(text)
        else:
            raise TicketmarkError(f"{p}: plan must be .toml or .json, got {p.suffix!r}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise TicketmarkError(f"{p} is not a valid plan ({exc})") from None
    return expand_plan(raw, str(p))


def expand_plan(raw: Any, where: str = "plan") -> list[PlanRow]:
    """``[{kind, param: value | [values]}]`` (or under an ``attack(s)`` key) -> rows."""
    entries = raw
    if isinstance(raw, Mapping):
        entries = raw.get("attack", raw.get("attacks"))
    if not isinstance(entries, list) or not entries:
        raise TicketmarkError(f"{where}: expected a list of attacks ([[attack]] tables in "
                              f"TOML, or {{\"attacks\": [...]}} in JSON)")
    rows: list[PlanRow] = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or "kind" not in entry:
            raise TicketmarkError(f"{where}: attack #{i} has no 'kind'")
        entry = dict(entry)
        kind, label = str(entry.pop("kind")), str(entry.pop("label", ""))
        if kind not in ATTACKS:
            raise TicketmarkError(f"{where}: unknown attack {kind!r} in attack #{i}; choose "
                                  f"one of: {', '.join(ATTACKS)}")
        swept = [k for k, v in entry.items() if isinstance(v, list) and k not in _LIST_PARAMS]
        for values in itertools.product(*(entry[k] for k in swept)):
            params = {**entry, **dict(zip(swept, values, strict=True))}
            resolve_params(kind, params)  # unknown names fail now, before any work
            rows.append(PlanRow(kind, params, label))
    return rows


def _describe(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def run_sweep(ticket: Ticket, plan: list[PlanRow], data: DataSplits, out_dir: str | Path, *,
              columns: list[str] | None = None, save_tickets: bool = False,
              progress: bool = False,
              on_row: Callable[[dict[str, Any]], None] | None = None,
              device: str = "auto") -> SweepResult:
    """Attack ``ticket`` once per plan row; rewrite the table after every row.

    ``columns`` names registered extra columns (``register_column``) to compute on each
    stolen ticket. The table is rewritten atomically after each row, so an interrupted
    sweep leaves the rows it finished.
    """
    from ticketmark.attacks.apply import _acc, check_ticket_data

    extra = list(columns or [])
    unknown = [c for c in extra if c not in SWEEP_COLUMNS]
    if unknown:
        raise TicketmarkError(f"unknown sweep column {unknown[0]!r}; registered: "
                              f"{', '.join(SWEEP_COLUMNS) or 'none'}")
    check_ticket_data(ticket, data)
    out = Path(out_dir)
    base_cols = ["attack", "params", "acc_before", "acc_after", "acc_drop", "sparsity",
                 "effective_bits", "seconds"]
    result = SweepResult(columns=base_cols + (["ticket"] if save_tickets else []) + extra)
    acc0 = _acc(ticket.build(), data)
    baseline = {"attack": "none", "params": "", "acc_before": acc0, "acc_after": acc0,
                "acc_drop": 0.0, "sparsity": 100 * ticket.mask.sparsity(), "seconds": 0.0}
    for name in extra:
        baseline[name] = SWEEP_COLUMNS[name](ticket, ticket, None)
    result.rows.append(baseline)
    history: list[dict[str, Any]] = []
    for i, row in enumerate(plan, start=1):
        start = time.perf_counter()
        stolen = apply_attack(ticket, row.kind, row.params, data, progress=progress,
                              acc_before=acc0, device=device)
        entry = stolen.meta["history"][-1]
        cells: dict[str, Any] = {
            "attack": row.label or row.kind, "params": _describe(row.params),
            "acc_before": entry["acc_before"], "acc_after": entry["acc_after"],
            "acc_drop": entry["acc_before"] - entry["acc_after"],
            "sparsity": 100 * entry["sparsity_after"],
            "effective_bits": entry.get("effective_bits"),
            "seconds": time.perf_counter() - start,
        }
        path = None
        if save_tickets:
            path = save_ticket(out / "tickets" / f"{i:02d}_{row.kind}", stolen)
            cells["ticket"] = str(path.relative_to(out))
        for name in extra:
            cells[name] = SWEEP_COLUMNS[name](ticket, stolen, path)
        result.rows.append(cells)
        history.append({**entry, "row": i, "label": row.label})
        write_tables(result, out, ticket, history)
        if on_row is not None:
            on_row(cells)
    write_tables(result, out, ticket, history)
    return result


def write_tables(result: SweepResult, out: Path, ticket: Ticket,
                 history: list[dict[str, Any]]) -> None:
    title = (f"Attack sweep: {ticket.model_name} on {ticket.dataset}, "
             f"{100 * ticket.mask.sparsity():.1f}% sparse (accuracy in %, test split)")
    atomic_write_text(out / "sweep.csv", result.csv())
    atomic_write_text(out / "sweep.md", result.markdown(title))
    atomic_write_json(out / "sweep.json", _jsonable({"ticket": {
        "model": ticket.model_name, "dataset": ticket.dataset,
        "sparsity": ticket.mask.sparsity(), "fingerprint": ticket.fingerprint()},
        "rows": result.rows, "history": history}))
