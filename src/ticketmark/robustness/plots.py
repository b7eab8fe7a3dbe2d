"""Robustness-vs-sparsity figure: one line per measure, dense networks as stars at 0%."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ticketmark.report.plots import plt, save_figure


def plot_robustness_vs_sparsity(rows: Sequence[Mapping[str, Any]], path: str | Path,
                                title: str = "Robustness vs sparsity") -> Path:
    """Clean, PGD at each eps and mean corruption accuracy against sparsity."""
    series: dict[str, list[tuple[float, float, bool]]] = {}
    for r in rows:
        s, dense = 100 * float(r["sparsity"]), r["role"] == "dense"
        series.setdefault("clean", []).append((s, r["clean"], dense))
        for eps, acc in r["pgd"].items():
            series.setdefault(f"PGD eps={eps}", []).append((s, acc, dense))
        for eps, acc in (r.get("autoattack_apgd") or {}).items():
            series.setdefault(f"APGD eps={eps}", []).append((s, acc, dense))
        if "corruption_mean" in r:
            series.setdefault("corruptions (mean)", []).append((s, r["corruption_mean"], dense))
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    for i, (label, pts) in enumerate(series.items()):
        color = f"C{i}"
        tickets = sorted((x, y) for x, y, d in pts if not d)
        if tickets:
            xs, ys = zip(*tickets, strict=True)
            ax.plot(xs, ys, marker="o", color=color, label=label)
        dense = [(x, y) for x, y, d in pts if d]
        if dense:
            xs, ys = zip(*dense, strict=True)
            ax.scatter(xs, ys, marker="*", s=120, color=color,
                       label=None if tickets else label, zorder=3)
    ax.set_xlabel("sparsity (%)  [stars: dense networks]")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
