"""The confusion strip: every queried trigger, framed green (match) or red (miss).

A reader sees at a glance whether the suspect answers the trigger set like the owner's
model (a wall of green) or like chance (about one green in ``classes``). Cells are large
enough, and the ``a→b`` labels set in a size, to be read at the picture's natural size;
a legend under the grid says what ``a→b`` means, so the picture stands on its own.

The triggers are tiled into one RGB mosaic drawn by a single ``imshow``: one matplotlib
panel per trigger cost about 3.5 s per picture (a hundred ``add_subplot`` calls with their
ticks and spines), which made this picture half of the demo's CPU time.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from ticketmark.report.plots import plt, save_figure

MATCH = "#1a9641"
MISS = "#d7191c"
_TILE = 32  # pixels a trigger is enlarged to (nearest neighbour, whole multiples)
_FRAME = 3  # frame width in mosaic pixels
_BAND = 14  # room under each tile for its "label→answer" caption
_GAP = 5
LEGEND = ("Each cell is one trigger input. a→b: a = the label the owner's trigger set "
          "assigns to it, b = the suspect's answer.\nGreen frame: the suspect answered a "
          "(a match); red frame: it did not. A model never trained on the set matches "
          "about one cell in the number of classes.")


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) / 255.0 for i in (1, 3, 5)])


def _as_rgb(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, H, W, 3) in [0, 1], scaled by the set's own range, enlarged."""
    lo, hi = float(x.min()), float(x.max())
    img = (x.astype(np.float64) - lo) / max(hi - lo, 1e-9)
    img = np.repeat(img[:, :1], 3, axis=1) if img.shape[1] < 3 else img[:, :3]
    img = img.transpose(0, 2, 3, 1)
    up = max(1, _TILE // max(img.shape[1], img.shape[2]))
    return img.repeat(up, axis=1).repeat(up, axis=2)


def _mosaic(x: np.ndarray, ok: np.ndarray, per_row: int, rows: int
            ) -> tuple[np.ndarray, int, int, int]:
    """White canvas with each trigger in its coloured frame, row-major; cell sizes."""
    n = len(ok)
    tiles = _as_rgb(x) if n else np.zeros((0, _TILE, _TILE, 3))
    th, tw = tiles.shape[1] + 2 * _FRAME, tiles.shape[2] + 2 * _FRAME
    ch, cw = th + _BAND + _GAP, tw + _GAP
    grid = np.ones((rows * per_row, ch, cw, 3))
    grid[:n, :th, :tw] = np.where(ok[:, None], _rgb(MATCH), _rgb(MISS))[:, None, None, :]
    grid[:n, _FRAME:th - _FRAME, _FRAME:tw - _FRAME] = tiles
    canvas = grid.reshape(rows, per_row, ch, cw, 3).transpose(0, 2, 1, 3, 4)
    return canvas.reshape(rows * ch, per_row * cw, 3), ch, cw, th


def confusion_strip(x: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    path: str | Path, title: str, per_row: int = 10) -> Path:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    n = len(labels)
    per_row = max(1, min(per_row, n)) if n else max(1, per_row)
    rows = max(1, -(-n // per_row))
    ok = labels == predicted
    canvas, ch, cw, th = _mosaic(np.asarray(x), ok, per_row, rows)
    scale = 2.3 / 110  # inches per mosaic pixel: cells of ~100 px, 10 pt labels readable
    # The picture is saved at its own size (no tight crop), so everything must fit in it:
    # at least 8 in wide for the one-row legend (about 7 in at 9 pt), and a bottom margin
    # that holds the explanation's lines with the legend above them.
    width = max(canvas.shape[1] * scale, 8.0)
    explanation = _wrapped(LEGEND, width, 9)
    text_h = (explanation.count("\n") + 1) * 9 * 1.3 / 72  # inches, 1.3 line spacing
    bottom = text_h + 0.55  # legend row above the text
    height = canvas.shape[0] * scale + 0.5 + bottom
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for i in range(n):
        r, c = divmod(i, per_row)
        ax.text(c * cw + (cw - _GAP) / 2, r * ch + th + _BAND / 2, f"{labels[i]}→{predicted[i]}",
                ha="center", va="center", fontsize=10, color=MATCH if ok[i] else MISS)
    fig.legend(handles=[Patch(facecolor=MATCH, label="match: suspect answers the trigger's "
                                                     "label"),
                        Patch(facecolor=MISS, label="miss"),
                        Patch(facecolor="white", edgecolor="grey",
                              label="a→b: trigger label a, suspect's answer b")],
               loc="lower center", ncol=3, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, (text_h + 0.05) / height))
    fig.text(0.5, 0.03 / height, explanation, ha="center", va="bottom", fontsize=9,
             linespacing=1.3)
    fig.suptitle(title, fontsize=12)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.5 / height, bottom=bottom / height)
    # Every artist is placed above: no tight crop, which would draw the figure twice.
    return save_figure(fig, path, tight=False)


def _wrapped(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points.

    Matplotlib's ``wrap=True`` measures the text word by word at draw time (about a fifth
    of this picture's rendering); a line of at most width / (0.6 em) characters fits, as
    DejaVu Sans averages about 0.55 em per character of prose.
    """
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))
