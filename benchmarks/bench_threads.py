"""Torch intra-op threads for ticketmark's small-tensor work: 1 against N, in one run.

    python benchmarks/bench_threads.py [--threads 1,2] [--steps 40] [--rounds 2]

Two workloads of the demo, each in a fresh subprocess per thread count (torch reads the
count when it starts), alternated ``--rounds`` times so that a change in the machine's
load hits every setting alike:

* ``train``: SGD steps of resnet20s on digits-sized input (1x8x8, batch 64, 80% sparse):
  the demo's finding, embedding and fine-tuning.
* ``null``: the signature verifier's search null over a resnet20s (16 random codes x 8
  masks x 4 orientations, FFT correlation per layer): ``verify`` on a suspect.

Reported per setting: wall seconds, CPU seconds (user + system of the child), and the
ratio to one thread. On a shared machine the CPU column is the honest one (wall time
depends on what the neighbours do); the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(workload: str, steps: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from ticketmark.models import build_model
    from ticketmark.sparsity import Mask, random_prune

    torch.manual_seed(0)
    if workload == "train":
        model = build_model("resnet20s", 1, 10, 8)
        mask = random_prune(Mask.ones(model), 0.8, seed=0)
        mask.apply(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))

        def work() -> None:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
    else:
        from ticketmark.ownership.signature.search_null import search_null

        model = build_model("resnet20s", 1, 10, 8)
        mask = random_prune(Mask.ones(model), 0.8, seed=0)
        mask.apply(model)
        weights = {n: p.detach() for n, p in model.named_parameters()
                   if n in mask and p.dim() == 4}

        def work() -> None:
            search_null(weights, {}, 1, 10)

    work()  # warm-up: allocator, kernels, caches
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    return {"wall": wall, "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="wall seconds after which a child is stopped and reported as such")
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "THREADS"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.steps)))
        return
    counts = [int(t) for t in args.threads.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
          flush=True)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for workload in ("train", "null"):
            for n in counts:
                results.setdefault((workload, n), []).append(
                    run_child(workload, n, args.steps, args.timeout))
                r = results[(workload, n)][-1]
                print(f"  {workload}, {n} thread(s): wall {r['wall']:.2f} s, CPU "
                      f"{r['cpu']:.2f} s" + (" (stopped at the time limit)"
                                             if r["timed_out"] else ""), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| workload | threads | wall s (min of rounds) | CPU s (min) | wall / 1 thread | "
          "CPU / 1 thread |")
    print("|---|---:|---:|---:|---:|---:|")
    for workload in ("train", "null"):
        base = results[(workload, counts[0])]
        bw, bc = min(r["wall"] for r in base), min(r["cpu"] for r in base)
        for n in counts:
            rs = results[(workload, n)]
            w, c = min(r["wall"] for r in rs), min(r["cpu"] for r in rs)
            mark = " (hit the time limit)" if all(r["timed_out"] for r in rs) else ""
            print(f"| {workload} | {n} | {w:.2f}{mark} | {c:.2f} | {w / bw:.2f} | "
                  f"{c / bc:.2f} |")


def run_child(workload: str, n: int, steps: int, timeout: float) -> dict[str, float]:
    """One child; CPU from this process's children rusage, so a child stopped at the
    time limit still reports what it burnt (its timed part is then at least that)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--steps", str(steps), "--child",
                              workload, str(n)], env=env, check=True, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"wall": time.perf_counter() - t0, "timed_out": True,
                "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}
    res = json.loads(out.stdout)
    assert res["threads"] == n, f"asked for {n} threads, torch used {res}"
    return {**res, "timed_out": False}


if __name__ == "__main__":
    main()
