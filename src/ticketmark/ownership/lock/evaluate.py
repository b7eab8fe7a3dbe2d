"""How much does a lock cost someone who retrains the released ticket? Measure it.

For each chooser and key size, the locked mask is retrained from the ticket's rewind point
with the same recipe and seed as the original, so the gap is the lock's doing, not the
seed's. The forging test plays a thief who knows how many connections each layer lost and
adds that many random ones back (he cannot tell key positions from other pruned ones, so
a few may by chance be key positions) before retraining. A second seed of the original
gives the noise scale.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ticketmark.data import DataSplits, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket, atomic_write_json, atomic_write_text, load_ticket
from ticketmark.io.ticket import load_state
from ticketmark.models import build_model
from ticketmark.ownership.lock.choosers import CHOOSERS, ChooserContext, choose
from ticketmark.ownership.lock.locking import (
    lock_ticket,
    random_positions,
    unlock_ticket,
    with_added,
)
from ticketmark.sparsity.mask import Mask
from ticketmark.training import TrainConfig, evaluate, train

DEFAULT_SIZES = (1.0, 2.0, 5.0, 10.0, 20.0)
COLUMNS = ["method", "key_target_pct", "key_weights", "key_pct", "key_connections",
           "locked_acc", "locked_drop", "forged_acc", "forged_drop", "unlocked_acc",
           "unlocked_identical", "choose_s", "retrain_s"]


@dataclass
class EvalConfig:
    methods: list[str] = field(default_factory=lambda: list(CHOOSERS))
    sizes: list[float] = field(default_factory=lambda: list(DEFAULT_SIZES))  # percent
    epochs: int = 4
    seed: int = 0
    forge: bool = True
    forge_sizes: list[float] | None = None  # None: every size
    noise: bool = True  # retrain the original with a second seed for the noise scale
    data_dir: str | None = None
    batches: int = 4
    device: str | None = None  # None: the ticket's recipe (train.device)

    def validate(self) -> EvalConfig:
        unknown = [m for m in self.methods if m not in CHOOSERS]
        if unknown:
            raise TicketmarkError(f"unknown chooser {unknown[0]!r}; choose from "
                                  f"{', '.join(CHOOSERS)}")
        if not self.sizes or any(not 0 < s < 100 for s in self.sizes):
            raise TicketmarkError("key sizes are percentages in (0, 100)")
        if self.epochs < 1:
            raise TicketmarkError(f"retraining needs at least 1 epoch, got {self.epochs}")
        return self


def retrain(ticket: Ticket, mask: Mask, data: DataSplits, cfg: TrainConfig) -> float:
    """Test accuracy after training ``mask`` from the ticket's rewind weights."""
    if ticket.rewind is None:
        raise TicketmarkError("the ticket has no rewind weights to retrain from")
    model = build_model(ticket.model_name, ticket.in_channels, ticket.num_classes,
                        ticket.image_size)
    load_state(model, ticket.rewind)
    mask.apply(model)
    result = train(model, data, cfg, mask, progress=False)
    return float(result.final["test_acc"])


def _bit_identical(a: Ticket, b: Ticket) -> bool:
    if set(a.state) != set(b.state) or list(a.mask) != list(b.mask):
        return False
    same = all(a.state[k].dtype == b.state[k].dtype and
               a.state[k].contiguous().reshape(-1).view(torch.uint8).equal(
                   b.state[k].contiguous().reshape(-1).view(torch.uint8)) for k in a.state)
    return same and all(torch.equal(a.mask[k], b.mask[k]) for k in a.mask)


def train_config(ticket: Ticket, epochs: int, seed: int) -> TrainConfig:
    """The ticket's own recipe (from its metadata), shortened to ``epochs``."""
    recipe = dict(ticket.meta.get("train") or {})
    recipe.update(epochs=epochs, seed=seed, milestones=[])
    cfg = TrainConfig.from_dict(recipe)
    return cfg.with_model_defaults(ticket.model_name).validate()


def evaluate_lock(ticket_path: str | Path, out_dir: str | Path, cfg: EvalConfig,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the grid, writing ``lock_eval.csv``, ``.md``, ``.json`` and ``.png`` as it goes."""
    cfg.validate()
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out_dir)
    ticket = load_ticket(ticket_path)
    if cfg.device is not None:  # the recipe's device, overridden for every retraining
        ticket.meta["train"] = {**(ticket.meta.get("train") or {}), "device": cfg.device}
    data = load_dataset(ticket.dataset, cfg.data_dir)
    total = ticket.mask.count()
    tcfg = train_config(ticket, cfg.epochs, cfg.seed)
    t0 = time.perf_counter()
    base = {
        "ticket": str(ticket_path), "model": ticket.model_name, "dataset": ticket.dataset,
        "sparsity": ticket.mask.sparsity(), "weights": total, "epochs": cfg.epochs,
        "lr": tcfg.lr, "seed": cfg.seed,
        "original_acc": evaluate(ticket.build(), data.test)[0],
        "original_retrained_acc": retrain(ticket, ticket.mask, data, tcfg),
    }
    if cfg.noise:
        other_seed = train_config(ticket, cfg.epochs, cfg.seed + 1)
        base["original_retrained_acc_seed2"] = retrain(ticket, ticket.mask, data, other_seed)
    say(f"original {base['original_acc']:.2f}%, retrained {cfg.epochs} epochs "
        f"{base['original_retrained_acc']:.2f}% (seed {cfg.seed + 1}: "
        f"{base.get('original_retrained_acc_seed2', float('nan')):.2f}%) in "
        f"{time.perf_counter() - t0:.0f}s")
    rows: list[dict[str, Any]] = []
    result = {"baseline": base, "rows": rows}
    ctx = ChooserContext(ticket, seed=cfg.seed, data_dir=cfg.data_dir, batches=cfg.batches,
                         data=data)
    budgets = [max(1, round(total * s / 100)) for s in cfg.sizes]
    choices, choose_s = {}, {}
    for method in cfg.methods:
        t0 = time.perf_counter()
        choices[method] = choose(ctx, method, weights=max(budgets))
        choose_s[method] = time.perf_counter() - t0
        say(f"{method}: ranked in {choose_s[method]:.1f}s")
    # Size-major order: if the run is cut short every chooser has its first sizes done.
    for pct, budget in zip(cfg.sizes, budgets, strict=True):
        for method in cfg.methods:
            choice = choices[method]
            t1 = time.perf_counter()
            sel = choice.take(budget)
            locked, key = lock_ticket(ticket, sel, add_back=False, seed=cfg.seed)
            unlocked = unlock_ticket(locked, key)
            row: dict[str, Any] = {
                "method": method, "key_target_pct": pct, "key_weights": sel.count(),
                "key_pct": 100 * sel.count() / total,
                "key_connections": sum(int(c.shape[0]) for c in sel.connections.values()),
                "unlocked_acc": evaluate(unlocked.build(), data.test)[0],
                "unlocked_identical": _bit_identical(unlocked, ticket),
                "choose_s": round(choose_s[method], 2),
            }
            row["locked_acc"] = retrain(ticket, locked.mask, data, tcfg)
            row["locked_drop"] = base["original_retrained_acc"] - row["locked_acc"]
            note = ""
            if cfg.forge and (cfg.forge_sizes is None or pct in cfg.forge_sizes):
                gen = torch.Generator().manual_seed(cfg.seed * 31 + len(rows))
                thief = random_positions(locked.mask, sel.layer_counts(), gen, spread=True)
                row["forged_acc"] = retrain(ticket, with_added(locked.mask, thief), data, tcfg)
                row["forged_drop"] = base["original_retrained_acc"] - row["forged_acc"]
                note = f", forged {row['forged_acc']:.2f}%"
            row["retrain_s"] = round(time.perf_counter() - t1, 1)
            rows.append(row)
            say(f"{method:12s} key {row['key_pct']:5.2f}% ({row['key_weights']} weights): "
                f"locked {row['locked_acc']:.2f}%{note}, unlocked {row['unlocked_acc']:.2f}% "
                f"in {row['retrain_s']:.0f}s")
            write_outputs(out, result)
    result["summary"] = summarise(result)
    write_outputs(out, result)
    return result


def merge(parts: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Combine runs of one ticket split across processes (same recipe, so the same
    deterministic baseline) into one table and plot."""
    results = []
    for part in parts:
        path = Path(part) / "lock_eval.json"
        if not path.is_file():
            raise TicketmarkError(f"no lock_eval.json in {part}")
        results.append(json.loads(path.read_text()))
    keys = ("ticket", "epochs", "seed", "original_retrained_acc")
    first = results[0]["baseline"]
    for r in results[1:]:
        if any(r["baseline"].get(k) != first.get(k) for k in keys):
            raise TicketmarkError("the runs to merge differ in ticket, recipe or baseline")
    base = dict(first)
    for r in results:
        base = {**r["baseline"], **base}
    merged: dict[str, Any] = {"baseline": base,
                              "rows": [row for r in results for row in r["rows"]]}
    merged["summary"] = summarise(merged)
    write_outputs(Path(out_dir), merged)
    return merged


def summarise(result: dict[str, Any], points: float = 10.0) -> dict[str, Any]:
    """Per chooser: the smallest key whose retrained accuracy is ``points`` below the
    original's (None when no key size tried gets there)."""
    base = result["baseline"]["original_retrained_acc"]
    out: dict[str, Any] = {m: {"smallest_key_pct": None, "max_drop": -math.inf}
                           for m in dict.fromkeys(r["method"] for r in result["rows"])}
    for row in sorted(result["rows"], key=lambda r: r["key_pct"]):
        entry = out.setdefault(row["method"], {"smallest_key_pct": None,
                                               "max_drop": -math.inf})
        drop = base - row["locked_acc"]
        entry["max_drop"] = max(entry["max_drop"], drop)
        if drop >= points and entry["smallest_key_pct"] is None:
            entry["smallest_key_pct"] = round(row["key_pct"], 2)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    rows = result["rows"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
    atomic_write_text(out / "lock_eval.csv", buf.getvalue())
    atomic_write_json(out / "lock_eval.json", result)
    atomic_write_text(out / "lock_eval.md", markdown(result))
    if rows:
        plot(result, out / "lock_eval.png")


def markdown(result: dict[str, Any]) -> str:
    base, rows = result["baseline"], result["rows"]
    lines = [
        f"# Lock evaluation: {base['model']} on {base['dataset']}, "
        f"{100 * base['sparsity']:.1f}% sparse ({base['weights']} weights)",
        "",
        f"- original ticket (trained weights): {base['original_acc']:.2f}%",
        f"- original retrained from rewind, {base['epochs']} epochs: "
        f"{base['original_retrained_acc']:.2f}% (second seed: "
        f"{_fmt(base.get('original_retrained_acc_seed2', 'not run'))}%)",
        "- locked/forged: the same retraining of the locked mask / of the locked mask plus "
        "as many random connections per layer as the key holds",
        "- unlocked: the unlocked ticket's trained weights, evaluated (bit-identical column "
        "compares it with the original)",
        "",
        "| chooser | key % | key weights | locked acc | drop | forged acc | forged drop "
        "| unlocked acc | bit-identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    for r in sorted(rows, key=lambda r: (order[r["method"]], r["key_pct"])):
        forged = (f"{r['forged_acc']:.2f} | {r['forged_drop']:+.2f}" if "forged_acc" in r
                  else "- | -")
        lines.append(f"| {r['method']} | {r['key_pct']:.2f} | {r['key_weights']} | "
                     f"{r['locked_acc']:.2f} | {r['locked_drop']:+.2f} | {forged} | "
                     f"{r['unlocked_acc']:.2f} | {'yes' if r['unlocked_identical'] else 'NO'} |")
    summary = result.get("summary") or summarise(result)
    if summary:
        lines += ["", "Smallest key costing at least 10 points after retraining:", ""]
        for method, s in summary.items():
            what = (f"{s['smallest_key_pct']:.2f}% of the weights"
                    if s["smallest_key_pct"] is not None
                    else f"none of the sizes tried (largest drop {s['max_drop']:.2f} points)")
            lines.append(f"- {method}: {what}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    from ticketmark.report.plots import plt, save_figure

    base, rows = result["baseline"], result["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, method in enumerate(methods):
        pts = sorted((r["key_pct"], r["locked_acc"], r.get("forged_acc")) for r in rows
                     if r["method"] == method)
        color = f"C{i % 10}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color,
                label=method)
        forged = [(p[0], p[2]) for p in pts if p[2] is not None]
        if forged:
            ax.plot(*zip(*forged, strict=True), linestyle=":", marker=".", color=color,
                    alpha=0.6)
    ax.axhline(base["original_retrained_acc"], color="black", linestyle="--", linewidth=1,
               label="original (retrained)")
    ax.set_xscale("log")
    ticks = sorted({round(r["key_target_pct"], 2) for r in rows})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("key size (% of the ticket's weights, log scale)")
    ax.set_ylabel("test accuracy after retraining (%)")
    ax.set_title(f"Locked {base['model']} on {base['dataset']} (dotted: thief's forgery)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)
