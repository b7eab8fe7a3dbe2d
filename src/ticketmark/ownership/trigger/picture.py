"""The confusion strip: every queried trigger, framed green (match) or red (miss).

A reader sees at a glance whether the suspect answers the trigger set like the owner's
model (a wall of green) or like chance (about one green in ``classes``). Cells are large
enough, and the ``a→b`` labels set in a size, to be read at the picture's natural size;
a legend under the grid says what ``a→b`` means, so the picture stands on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ticketmark.report.plots import plt, save_figure

MATCH, MISS = "#1a9641", "#d7191c"
LEGEND = ("Each cell is one trigger input. a→b: a = the label the owner's trigger set "
          "assigns to it, b = the suspect's answer.\nGreen frame: the suspect answered a "
          "(a match); red frame: it did not. A model never trained on the set matches "
          "about one cell in the number of classes.")


def confusion_strip(x: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    path: str | Path, title: str, per_row: int = 10) -> Path:
    n = len(labels)
    per_row = max(1, min(per_row, n))
    rows = max(1, -(-n // per_row))
    cell = 0.95  # inches: at 110 dpi a cell is ~105 px and its label ~15 px tall
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * cell, rows * 1.1 * cell + 1.3),
                             squeeze=False)
    lo, hi = float(x.min()) if n else 0.0, float(x.max()) if n else 1.0
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        img = (x[i] - lo) / max(hi - lo, 1e-9)
        img = img[0] if img.shape[0] == 1 else img[:3].transpose(1, 2, 0)
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ok = bool(labels[i] == predicted[i])
        for spine in ax.spines.values():
            spine.set_edgecolor(MATCH if ok else MISS)
            spine.set_linewidth(3)
        ax.set_title(f"{labels[i]}→{predicted[i]}", fontsize=10, pad=2,
                     color=MATCH if ok else MISS, fontweight="bold")
    fig.suptitle(title, fontsize=12)
    fig.text(0.5, 0.005, LEGEND, ha="center", va="bottom", fontsize=9, wrap=True)
    fig.tight_layout(rect=(0, 1.0 / (rows * 1.1 * cell + 1.3), 1, 0.97))
    return save_figure(fig, path)
