"""Choosing ewp paths: the vectorised walk against the strongest simple baseline and the paper.

    python benchmarks/bench_lock.py [--paths 1000] [--repeats 10] [--models resnet20s,resnet18]

Three implementations choose ``--paths`` edge-weighted paths on the same sparse weights
(random init, 80% global magnitude pruning), each starting from the weights and mask, so
each pays for its own kernel magnitudes:

* ``vectorised``: ``ticketmark.ownership.lock.paths`` (``kernel_views`` + ``walk`` +
  ``path_ranks``), what ``ticketmark lock --method ewp`` runs.
* ``numpy loop``: what a competent engineer writes first. Kernel magnitudes once, then per
  layer each input channel's cumulative sum over outputs, precomputed; every path draws
  each hop with one uniform number and one ``searchsorted`` on that row. Same registers
  (residual stream), same dead-end jumps as the vectorised walk.
* ``paper``: the algorithm of ``prune_ewp`` in the paper's repository (VITA-Group/
  NO-stealing-LTH, ``pruning_utils_unprune.py``), re-implemented from reading it: for every path
  and every layer it recomputes ``sum |W * M|`` over each kernel, starts a path at
  ``randint(0, in - 1)``, draws the next channel with ``np.random.choice(p=column /
  sum)``, redraws the start when a column is empty, and clears the chosen kernel in a deep
  copy of the mask. Two changes so that it runs on our models and its picks are comparable:
  it follows our registers (the original walks modules in definition order, which on an
  option-B shortcut feeds ``conv2``'s output channel into the shortcut's input; when that
  index is past the shortcut's width the original catches the IndexError and restarts at
  a random channel) and it visits our prunable layers (the original: convolutions only).
  Its per-path work, which is what the timing measures, is the original's.

Times are CPU seconds of this thread (``time.thread_time``, torch and BLAS held at one
thread), so other processes on a shared machine do not count; ratios are within one run.
The vectorised walk and the numpy loop get the same number of repeats (best of
``--repeats``). The vectorised timing is exactly what ``lock`` runs (magnitudes, walk,
ranks); turning its ranks into a set of kernels for the agreement checks is not timed (the
loop builds its set as it goes, which is timed). A second table splits both into kernel
magnitudes and sampling from given magnitudes, so that a gain in one part cannot hide in
the total.
Agreement: the three sample from the same distribution with different random streams, so
their kernel sets cannot be equal; the check is that they overlap as much as two seeds of
the vectorised walk overlap with each other (Jaccard), and that the chosen kernels have the
same mean magnitude.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from ticketmark.models import build_model
from ticketmark.ownership.lock.paths import (
    KernelView,
    Plan,
    build_plan,
    kernel_views,
    path_ranks,
    walk,
)
from ticketmark.sparsity import Mask, magnitude_prune

MODELS = {"resnet20s": (1, 10, 28), "resnet18": (3, 10, 32)}
Kernels = set[tuple[str, int, int]]
T = TypeVar("T")


def sparse_ticket(name: str) -> tuple[torch.nn.Module, Mask]:
    torch.manual_seed(0)
    model = build_model(name, *MODELS[name])
    mask = magnitude_prune(model, Mask.ones(model), 0.8)
    mask.apply(model)
    return model, mask


def vectorised(plan: Plan, mask: Mask, weights: dict[str, torch.Tensor], paths: int,
               seed: int) -> dict[str, torch.Tensor]:
    """What ``lock --method ewp`` runs: kernel magnitudes, the walk, the ranks."""
    views = kernel_views(plan, mask, weights)
    return sample_ranks(plan, views, paths, seed)


def sample_ranks(plan: Plan, views: dict[str, KernelView], paths: int, seed: int
                 ) -> dict[str, torch.Tensor]:
    """The vectorised walk and ranks from given kernel magnitudes."""
    sample = walk(plan, views, paths, generator=torch.Generator().manual_seed(seed))
    return path_ranks(plan, sample)


def kernel_set(ranks: dict[str, torch.Tensor]) -> Kernels:
    """The kernels on some path (for the agreement checks; not timed)."""
    out: Kernels = set()
    for name, r in ranks.items():
        o, i = torch.nonzero(r >= 0, as_tuple=True)
        out.update(zip([name] * len(o), o.tolist(), i.tolist(), strict=True))
    return out


def _magnitudes(plan: Plan, mask: Mask, weights: dict[str, torch.Tensor]
                ) -> dict[str, np.ndarray]:
    """(out, in) summed |w| of present weights per kernel, in numpy."""
    mags = {}
    for step in plan.steps:
        out, cin = plan.out_channels(step), plan.in_channels(step)
        w = (weights[step.name] * mask[step.name]).abs().numpy().reshape(out, cin, -1)
        mags[step.name] = w.sum(-1, dtype=np.float64)
    return mags


def numpy_loop(plan: Plan, mask: Mask, weights: dict[str, torch.Tensor], paths: int,
               seed: int) -> Kernels:
    """Kernel magnitudes in numpy, then :func:`loop_from_magnitudes`."""
    return loop_from_magnitudes(plan, _magnitudes(plan, mask, weights), paths, seed)


def loop_from_magnitudes(plan: Plan, mags: dict[str, np.ndarray], paths: int, seed: int
                         ) -> Kernels:
    """Per path, per layer: one uniform draw and one searchsorted on a precomputed row."""
    rng = np.random.default_rng(seed)
    rows = {n: np.cumsum(k.T, axis=1) for n, k in mags.items()}  # row i: where i can go
    totals = {n: r[:, -1] for n, r in rows.items()}
    jump = {n: np.cumsum(t) for n, t in totals.items()}  # dead end: by outgoing totals
    alive = {n: np.flatnonzero(t > 0) for n, t in totals.items()}
    chosen: Kernels = set()
    for _ in range(paths):
        regs: dict[str, int] = {}
        for step in plan.steps:
            name = step.name
            if step.pinned and step.src in regs and step.dst in regs:
                o, i = regs[step.dst], regs[step.src]
                if mags[name][o, i] > 0:
                    chosen.add((name, o, i))
                continue
            if len(alive[name]) == 0:
                regs[step.dst] = 0
                continue
            if step.src in regs:
                i = regs[step.src]
                if totals[name][i] <= 0:
                    i = int(np.searchsorted(jump[name], rng.random() * jump[name][-1], "right"))
            else:
                i = int(alive[name][rng.integers(len(alive[name]))])
            row = rows[name][i]
            o = min(int(np.searchsorted(row, rng.random() * row[-1], "right")), len(row) - 1)
            regs[step.src], regs[step.dst] = i, o
            chosen.add((name, o, i))
    return chosen


def paper_ewp(plan: Plan, mask: Mask, weights: dict[str, torch.Tensor], paths: int,
              seed: int) -> Kernels:
    """The paper's prune_ewp, per path and per layer (see the module docstring)."""
    np.random.seed(seed)
    new_mask = copy.deepcopy(dict(mask))
    chosen: Kernels = set()
    for _ in range(paths):
        regs: dict[str, int] = {}
        for step in plan.steps:
            name = step.name
            out, cin = plan.out_channels(step), plan.in_channels(step)
            # recomputed for every path, as in the original
            weight = (weights[name] * mask[name]).abs().reshape(out, cin, -1).sum(-1).numpy()
            if step.pinned and step.src in regs and step.dst in regs:
                o, i = regs[step.dst], regs[step.src]
                if weight[o, i] > 0:
                    new_mask[name].view(out, cin, -1)[o, i] = False
                    chosen.add((name, o, i))
                continue
            start = regs.get(step.src)
            if start is None:
                start = np.random.randint(0, weight.shape[1] - 1)
            prob = np.abs(weight[:, start])
            prob = prob / (prob.sum() + 1e-10)
            counter = 0
            while prob.sum() == 0:
                start = np.random.randint(0, weight.shape[1] - 1)
                prob = np.abs(weight[:, start])
                prob = prob / (prob.sum() + 1e-10)
                counter += 1
                if counter > 200000:
                    prob = np.ones(prob.shape) / prob.shape[0]
            prob = prob / prob.sum()  # the original's 1e-10 can trip choice()'s sum check
            end = int(np.random.choice(np.arange(weight.shape[0]), 1, p=prob)[0])
            new_mask[name].view(out, cin, -1)[end, start] = False
            regs[step.src], regs[step.dst] = start, end
            chosen.add((name, end, start))
    return chosen


def cpu_seconds(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Best CPU seconds of this thread over ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None  # the previous result is freed here, outside the timed call
        t0 = time.thread_time()
        out = fn()
        best = min(best, time.thread_time() - t0)
        result = out
    return best, result  # type: ignore[return-value]


def jaccard(a: Kernels, b: Kernels) -> float:
    return len(a & b) / max(1, len(a | b))


def bench(name: str, paths: int, repeats: int, paper_paths: int) -> dict[str, float | int | str]:
    model, mask = sparse_ticket(name)
    plan = build_plan(model, mask)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in mask}
    # whole pipelines, each from the weights and mask (same number of repeats for both)
    vec_s, ranks = cpu_seconds(lambda: vectorised(plan, mask, weights, paths, 1), repeats)
    loop_s, loop = cpu_seconds(lambda: numpy_loop(plan, mask, weights, paths, 1), repeats)
    # the split: kernel magnitudes, then sampling from them
    views_s, views = cpu_seconds(lambda: kernel_views(plan, mask, weights), repeats)
    mags_s, mags = cpu_seconds(lambda: _magnitudes(plan, mask, weights), repeats)
    walk_s, _ = cpu_seconds(lambda: sample_ranks(plan, views, paths, 1), repeats)
    draw_s, _ = cpu_seconds(lambda: loop_from_magnitudes(plan, mags, paths, 1), repeats)
    vec = kernel_set(ranks)
    vec2 = kernel_set(vectorised(plan, mask, weights, paths, 2))
    t0 = time.thread_time()
    paper = paper_ewp(plan, mask, weights, paper_paths, 1)
    paper_s = (time.thread_time() - t0) * paths / paper_paths

    def mean_mag(kernels: Kernels) -> float:
        return float(np.mean([mags[n][o, i] for n, o, i in kernels]))

    return {"model": name, "layers": len(plan.steps), "paths": paths,
            "vec_ms": 1000 * vec_s, "loop_ms": 1000 * loop_s, "paper_ms": 1000 * paper_s,
            "views_ms": 1000 * views_s, "mags_ms": 1000 * mags_s, "walk_ms": 1000 * walk_s,
            "draw_ms": 1000 * draw_s,
            "paper_paths": paper_paths, "k_vec": len(vec), "k_loop": len(loop),
            "k_paper": len(paper), "j_seeds": jaccard(vec, vec2), "j_loop": jaccard(vec, loop),
            "j_paper": jaccard(vec, paper), "m_vec": mean_mag(vec), "m_loop": mean_mag(loop),
            "m_paper": mean_mag(paper)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--paper-paths", type=int, default=None,
                    help="run the paper's algorithm on this many paths and scale its time "
                         "to --paths (its cost is linear in paths); default: all")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = [bench(m, args.paths, args.repeats, args.paper_paths or args.paths)
            for m in args.models.split(",")]
    print(f"ewp: choose {args.paths} paths on 80%-sparse weights; CPU ms of this thread "
          f"(1 torch thread), vectorised and numpy loop = best of {args.repeats} each, paper "
          "= one run" + (f" of {args.paper_paths} paths scaled to {args.paths}"
                         if args.paper_paths else "")
          + f"; load average {load:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("Whole pipelines, each from the weights and mask (its own kernel magnitudes "
          "included; vectorised = kernel_views + walk + path_ranks, what `lock` runs):\n")
    print("| model | layers | vectorised ms | numpy loop ms | paper's algorithm ms | "
          "loop / vectorised | paper / vectorised |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['layers']} | {r['vec_ms']:.1f} | {r['loop_ms']:.1f} | "
              f"{r['paper_ms']:.0f} | {r['loop_ms'] / r['vec_ms']:.1f}x | "
              f"{r['paper_ms'] / r['vec_ms']:.0f}x |")
    print("\nThe split (separate timings, same run): kernel magnitudes, then sampling from "
          "given magnitudes (vectorised: walk + path_ranks; loop: cumulative sums + the "
          "per-path loop):\n")
    print("| model | magnitudes vec ms | magnitudes loop ms | loop / vec | sampling vec ms | "
          "sampling loop ms | loop / vec |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['views_ms']:.1f} | {r['mags_ms']:.1f} | "
              f"{r['mags_ms'] / r['views_ms']:.1f}x | {r['walk_ms']:.1f} | "
              f"{r['draw_ms']:.1f} | {r['draw_ms'] / r['walk_ms']:.1f}x |")
    print("\nAgreement of the chosen kernels (Jaccard with the vectorised walk, seed 1; the "
          "first column is the vectorised walk's own seed-to-seed overlap):\n")
    print("| model | kernels vec / loop / paper | Jaccard vec seed 1 vs 2 | Jaccard vs loop | "
          "Jaccard vs paper | mean kernel magnitude vec / loop / paper |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['k_vec']} / {r['k_loop']} / {r['k_paper']} | "
              f"{r['j_seeds']:.3f} | {r['j_loop']:.3f} | {r['j_paper']:.3f} | "
              f"{r['m_vec']:.4f} / {r['m_loop']:.4f} / {r['m_paper']:.4f} |")


if __name__ == "__main__":
    main()
