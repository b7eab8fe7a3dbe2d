"""The confusion strip: every queried trigger, framed green (match) or red (miss).

A reader sees at a glance whether the suspect answers the trigger set like the owner's
model (a wall of green) or like chance (about one green in ``classes``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ticketmark.report.plots import plt, save_figure


def confusion_strip(x: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    path: str | Path, title: str, per_row: int = 20) -> Path:
    n = len(labels)
    rows = max(1, -(-n // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.6, rows * 0.75 + 0.5),
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
            spine.set_edgecolor("#1a9641" if ok else "#d7191c")
            spine.set_linewidth(2.5)
        ax.set_title(f"{labels[i]}→{predicted[i]}", fontsize=6, pad=1,
                     color="#1a9641" if ok else "#d7191c")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
