"""The confusion strip: how a suspect answered the trigger set, misses first.

On top, one small square per queried trigger, green (match) or red (miss), in query order:
the whole set at a glance (a wall of green for the owner's model, about one green in
``classes`` for chance). Below, the misses themselves, each trigger enlarged in a red frame
with its ``a→b`` label (a = the set's label, b = the suspect's answer), at most
``max_shown`` of them; the matches need no closer look. A legend under it says what it all
means, so the picture stands on its own. Cells and labels are sized to be read at the
picture's natural size.

The pictures are tiled into one RGB mosaic drawn by a single ``imshow``: one matplotlib
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
LEGEND = ("Top: one square per trigger input, in query order; green: the suspect answered "
          "the label the owner's set assigns to it (a match), red: it did not. A model "
          "never trained on the set matches about one input in the number of classes.\n"
          "Below: the missed inputs themselves, a→b: a = the set's label, b = the "
          "suspect's answer.")


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


_DOT = 12  # side of an overview square, in mosaic pixels
_DOT_GAP = 3


def _overview(ok: np.ndarray, width: int) -> np.ndarray:
    """One small square per query (green match, red miss), rows as wide as ``width``."""
    pitch = _DOT + _DOT_GAP
    per_row = max(1, (width + _DOT_GAP) // pitch)
    rows = max(1, -(-len(ok) // per_row))
    canvas = np.ones((rows * pitch, per_row * pitch, 3))
    for i, good in enumerate(ok):
        r, c = divmod(i, per_row)
        canvas[r * pitch:r * pitch + _DOT, c * pitch:c * pitch + _DOT] = _rgb(
            MATCH if good else MISS)
    return canvas[:, :max(width, _DOT)]


def confusion_strip(x: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    path: str | Path, title: str, per_row: int = 10,
                    max_shown: int = 20) -> Path:
    """The overview of every answer, then the first ``max_shown`` misses up close."""
    labels, predicted, x = np.asarray(labels), np.asarray(predicted), np.asarray(x)
    n = len(labels)
    ok = labels == predicted
    missed = np.flatnonzero(~ok)
    shown = missed[:max_shown]
    cols = max(1, min(per_row, len(shown))) if len(shown) else max(1, per_row)
    rows = -(-len(shown) // cols)
    cells, ch, cw, th = _mosaic(x[shown] if len(shown) else x[:0], ok[shown], cols,
                                max(rows, 1))
    cells = cells[:rows * ch] if rows else cells[:0]
    grid_w = max(cells.shape[1], per_row * (_TILE + 2 * _FRAME + _GAP))
    top = _overview(ok, grid_w) if n else np.ones((0, grid_w, 3))
    gap = 3 * _DOT_GAP + 16  # room for the line naming the misses
    canvas = np.ones((top.shape[0] + gap + cells.shape[0], grid_w, 3))
    canvas[:top.shape[0], :top.shape[1]] = top
    canvas[top.shape[0] + gap:, :cells.shape[1]] = cells
    scale = 2.3 / 110  # inches per mosaic pixel: cells of ~100 px, 10 pt labels readable
    # The picture is saved at its own size (no tight crop), so everything must fit in it:
    # at least 8 in wide for the one-row legend (about 7 in at 9 pt), and a bottom margin
    # that holds the explanation's lines with the legend above them.
    width = max(canvas.shape[1] * scale, 8.0)
    explanation = _wrapped(LEGEND, width, 9)
    text_h = (explanation.count("\n") + 1) * 9 * 1.3 / 72  # inches, 1.3 line spacing
    bottom = text_h + 0.55  # legend row above the text
    head = 0.3 + 0.22 * (title.count("\n") + 1)  # inches above the mosaic for the title
    height = canvas.shape[0] * scale + head + bottom
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    if not len(missed):
        said = f"no misses: all {n} answers match" if n else "no queries"
    elif len(shown) < len(missed):
        said = (f"the first {len(shown)} of {len(missed)} misses (a→b: set label a, "
                f"answer b)")
    else:
        said = (f"the {len(missed)} miss{'es' if len(missed) > 1 else ''} (a→b: set label "
                "a, answer b)")
    ax.text(0, top.shape[0] + gap / 2, said, ha="left", va="center", fontsize=10,
            color="#222")
    base = top.shape[0] + gap
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        ax.text(c * cw + (cw - _GAP) / 2, base + r * ch + th + _BAND / 2,
                f"{labels[i]}→{predicted[i]}", ha="center", va="center", fontsize=10,
                color=MISS)
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
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - head / height, bottom=bottom / height)
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
