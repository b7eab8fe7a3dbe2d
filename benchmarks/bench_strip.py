"""The trigger confusion strip: one tiled image against one matplotlib panel per trigger.

    python benchmarks/bench_strip.py [--triggers 100] [--repeats 3]

The baseline is the previous implementation (a grid of ``add_subplot`` panels with
coloured spines and a title each), kept here to measure against; both draw the same
triggers to PNG. CPU seconds of this process, best of ``--repeats``, in one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

import numpy as np

from ticketmark.ownership.trigger.picture import MATCH, MISS, confusion_strip
from ticketmark.report.plots import plt, save_figure


def panel_strip(x: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path,
                title: str, per_row: int = 20) -> Path:
    """The previous picture: one matplotlib panel per trigger."""
    n = len(labels)
    rows = max(1, -(-n // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.6, rows * 0.75 + 0.5),
                             squeeze=False)
    lo, hi = float(x.min()), float(x.max())
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
            spine.set_linewidth(2.5)
        ax.set_title(f"{labels[i]}→{predicted[i]}", fontsize=6, pad=1,
                     color=MATCH if ok else MISS)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triggers", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.1f}; CPU s, best of {args.repeats}\n")
    print("| input | panels (previous) s | one mosaic s | panels / mosaic |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape, name in [((1, 8, 8), "digits 1x8x8"), ((3, 32, 32), "cifar 3x32x32")]:
            x = rng.normal(size=(args.triggers, *shape)).astype(np.float32)
            y = rng.integers(0, 10, args.triggers)
            p = np.where(rng.random(args.triggers) < 0.8, y, rng.integers(0, 10, args.triggers))
            times = {}
            for label, fn in (("panels", panel_strip), ("mosaic", confusion_strip)):
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = cpu()
                    fn(x, y, p, Path(tmp) / f"{label}.png", "title")
                    best = min(best, cpu() - t0)
                times[label] = best
            print(f"| {name}, {args.triggers} triggers | {times['panels']:.2f} | "
                  f"{times['mosaic']:.2f} | {times['panels'] / times['mosaic']:.1f}x |")


if __name__ == "__main__":
    main()
