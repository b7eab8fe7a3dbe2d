"""Matplotlib figures written straight to PNG (Agg backend, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ticketmark.io.atomic import atomic_write_bytes  # noqa: E402


def save_figure(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` as PNG and close it.

    ``tight`` crops the saved picture to what is drawn; it costs a second full draw (text
    layout, image resampling) to find that box. A figure that places every artist itself
    (the trigger strip) passes ``tight=False`` and is saved at its own size.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_accuracy_vs_sparsity(rows: Sequence[Mapping[str, Any]], path: str | Path,
                              title: str = "Test accuracy across rounds") -> Path:
    """One point per round; the dense network is the leftmost point."""
    pts = [(100 * r["sparsity"], r["test_acc"]) for r in rows if r.get("test_acc") is not None]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o")
        for (x, y), r in zip(pts, [r for r in rows if r.get("test_acc") is not None],
                             strict=True):
            ax.annotate(str(r.get("round", "")), (x, y), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_layer_density(density: Mapping[str, float], path: str | Path) -> Path:
    names = list(density)
    fig, ax = plt.subplots(figsize=(6, max(2.0, 0.22 * len(names) + 0.8)))
    ax.barh(range(len(names)), [100 * density[n] for n in names], color="#3b7dd8")
    ax.set_yticks(range(len(names)), [n.removesuffix(".weight") for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("density (% of weights kept)")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_training_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]],
                         path: str | Path) -> Path:
    """Test accuracy per epoch, one line per round (from each round's metrics.jsonl)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, rows in curves.items():
        if rows:
            ax.plot([r["epoch"] for r in rows], [r["test_acc"] for r in rows], label=label,
                    marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    return save_figure(fig, path)
