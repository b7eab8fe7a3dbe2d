"""Time to choose ewp paths: the vectorised walk against a per-path, per-layer Python loop.

Times are CPU seconds of the (single) working thread, so a busy shared machine does not
distort them. Both sides start from the same trained-looking sparse weights (random init, 80% global
magnitude pruning), compute the same kernel-magnitude matrices, follow the same residual
stream registers and jump out of dead ends the same way; the baseline just draws one
channel at a time, as the original implementation did. A sanity column compares the mean
magnitude of the kernels each side picks in the last layer (same distribution: close).

    OMP_NUM_THREADS=1 python benchmarks/bench_lock.py [--paths 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

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


def loop_walk(plan: Plan, views: dict[str, KernelView], num_paths: int,
              gen: torch.Generator) -> tuple[set[tuple[str, int, int]], list[int]]:
    """The straightforward version: for every path, for every layer, one draw."""
    kernels: set[tuple[str, int, int]] = set()
    last_pick: list[int] = []
    last = plan.steps[-1].name
    # per-layer totals once, outside the loops, so the baseline pays only for its draws
    totals = {n: v.magnitude.sum(0) for n, v in views.items()}
    for _ in range(num_paths):
        regs: dict[str, int] = {}
        for step in plan.steps:
            view = views[step.name]
            if step.pinned and step.src in regs and step.dst in regs:
                o, i = regs[step.dst], regs[step.src]
                if bool(view.present[o, i]):
                    kernels.add((step.name, o, i))
                continue
            column_sums = totals[step.name]
            if step.src in regs:
                i = regs[step.src]
                if float(column_sums[i]) <= 0:
                    i = int(torch.multinomial(column_sums, 1, generator=gen))
            else:
                i = int(torch.multinomial((column_sums > 0).float(), 1, generator=gen))
            o = int(torch.multinomial(view.magnitude[:, i], 1, generator=gen))
            regs[step.src], regs[step.dst] = i, o
            kernels.add((step.name, o, i))
            if step.name == last:
                last_pick.append(o * view.magnitude.shape[1] + i)
    return kernels, last_pick


def sparse_ticket(name: str) -> tuple[torch.nn.Module, Mask]:
    torch.manual_seed(0)
    model = build_model(name, *MODELS[name])
    mask = magnitude_prune(model, Mask.ones(model), 0.8)
    mask.apply(model)
    return model, mask


def bench(name: str, paths: int, repeats: int) -> dict[str, float | int | str]:
    model, mask = sparse_ticket(name)
    plan = build_plan(model, mask)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in mask}

    def vectorised() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        views = kernel_views(plan, mask, weights)
        sample = walk(plan, views, paths, generator=torch.Generator().manual_seed(1))
        return path_ranks(plan, sample), sample.hops[plan.steps[-1].name]

    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        ranks, last_hops = vectorised()
        times.append(time.thread_time() - t0)
    t0 = time.thread_time()
    views = kernel_views(plan, mask, weights)
    kernels, last_pick = loop_walk(plan, views, paths, torch.Generator().manual_seed(1))
    loop_s = time.thread_time() - t0
    last_view = views[plan.steps[-1].name].magnitude
    vec_mag = float(last_view[last_hops[:, 0], last_hops[:, 1]].mean())
    loop_mag = float(last_view.flatten()[torch.tensor(last_pick)].mean())
    fast = min(times)
    return {"model": name, "layers": len(plan.steps), "paths": paths,
            "kernels_vec": int(sum(int((r >= 0).sum()) for r in ranks.values())),
            "kernels_loop": len(kernels), "vec_ms": 1000 * fast, "loop_ms": 1000 * loop_s,
            "speedup": loop_s / fast, "mag_vec": vec_mag, "mag_loop": loop_mag}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [bench(m, args.paths, args.repeats) for m in args.models.split(",")]
    print(f"ewp: choose {args.paths} paths (80% sparse, 1 thread, CPU time of this thread so "
          f"other processes on the machine do not count; vectorised = best of {args.repeats})")
    print("| model | prunable layers | kernels picked (vec / loop) | vectorised ms | "
          "python loop ms | speedup | mean last-layer |K| (vec / loop) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['layers']} | {r['kernels_vec']} / {r['kernels_loop']} | "
              f"{r['vec_ms']:.1f} | {r['loop_ms']:.0f} | {r['speedup']:.0f}x | "
              f"{r['mag_vec']:.3f} / {r['mag_loop']:.3f} |")


if __name__ == "__main__":
    main()
