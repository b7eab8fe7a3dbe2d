"""The verification picture: a layer's connectivity with the code's block outlined, and the
extracted code beside the expected one (modules that disagree marked), so an arbiter can see
the evidence rather than take a p-value on trust."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ticketmark.ownership.signature.placement import Position
from ticketmark.report.plots import plt, save_figure


def save_signature_figure(path: str | Path, conn: np.ndarray, position: Position, n: int,
                          extracted: np.ndarray, expected: np.ndarray, how: str) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2),
                             gridspec_kw={"width_ratios": [1.6, 1, 1]})
    ax = axes[0]
    ax.imshow(~conn.astype(bool), cmap="gray", interpolation="nearest")
    ax.add_patch(plt.Rectangle((position.col - 0.5, position.row - 0.5), n, n, fill=False,
                               edgecolor="red", linewidth=1.5))
    ax.set_title(f"{position.layer}\nconnectivity (dark = connected)", fontsize=9)
    ax.set_xlabel("input channel")
    ax.set_ylabel("output channel")
    wrong = extracted.astype(bool) != expected.astype(bool)
    axes[1].imshow(~extracted.astype(bool), cmap="gray", interpolation="nearest")
    ys, xs = np.nonzero(wrong)
    axes[1].scatter(xs, ys, s=12, c="red", marker="x", linewidths=0.8)
    axes[1].set_title(f"extracted ({int(wrong.sum())} of {wrong.size} differ, red)\n"
                      f"decode: {how}", fontsize=9)
    axes[2].imshow(~expected.astype(bool), cmap="gray", interpolation="nearest")
    axes[2].set_title("expected code", fontsize=9)
    for a in axes[1:]:
        a.set_xticks([])
        a.set_yticks([])
    return save_figure(fig, path)
