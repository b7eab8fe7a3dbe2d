"""Ticket finders against IMP on cost and accuracy, in one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_finders.py [--epochs 20] [--seeds 0 1 2]

For lenet300 on mnist5k and target sparsities of about 50/80/90%, every finder looks for a
ticket and retrains it for ``--epochs`` epochs: IMP (the baseline; one trajectory at a rate
that puts rounds 3, 7 and 10 at 50.0/80.2/90.0%), one-shot magnitude (OMP), early-bird,
COLT and random pruning (the floor). One table, averaged over seeds:

- sparsity and test accuracy of the retrained ticket (mean +- std over seeds);
- search epochs: training spent before the final retraining, in full-data epochs (IMP at
  round R: rounds 0..R-1; early-bird: the dense epochs until the stop, fractional when it
  stops inside an epoch; COLT: copies' epochs weighted by their share of the data);
- wall and CPU time of the whole find including the retraining (IMP: the trajectory's
  times up to that round, prorated by epochs, since one trajectory serves all three
  targets); on a shared machine the CPU time is the steadier of the two;
- cost: search epochs as a fraction of IMP's at the same target.

It also writes ``results.json`` and ``accuracy_vs_sparsity.png`` (one line per method) to
``--out``. Runs resume: a rerun with the same flags reuses finished rounds, so delete
``--out`` for fresh wall times.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ticketmark.finding import FindConfig, run_imp, run_oneshot
from ticketmark.finding.colt import run_colt
from ticketmark.finding.early_bird import run_early_bird
from ticketmark.io import atomic_write_json
from ticketmark.training import TrainConfig

IMP_RATE = 1 - 0.5 ** (1 / 3)  # rounds 3 / 7 / 10 -> 50.0 / 80.2 / 90.0 % sparse


def _rows(run: Path) -> list[dict[str, Any]]:
    return json.loads((run / "summary.json").read_text())["rounds"]


def _imp(args: argparse.Namespace, seed: int, out: Path) -> list[dict[str, Any]]:
    targets = {s: max(1, round(math.log(1 - s) / math.log(1 - IMP_RATE)))
               for s in args.sparsities}
    cfg = FindConfig(method="imp", model=args.model, dataset=args.dataset,
                     rounds=max(targets.values()), rate=IMP_RATE, rewind_epoch=args.rewind,
                     train=TrainConfig(epochs=args.epochs, seed=seed))
    start, cpu0 = time.perf_counter(), time.process_time()
    run_imp(cfg, out, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    rows = _rows(out)
    total = sum(r["epochs"] for r in rows)
    results = []
    for target, r in targets.items():
        search = sum(row["epochs"] for row in rows[:r])
        results.append({"method": "imp", "target": target, "seed": seed,
                        "sparsity": rows[r]["sparsity"], "test_acc": rows[r]["test_acc"],
                        "search_epochs": search,
                        "wall_s": wall * (search + rows[r]["epochs"]) / total,
                        "cpu_s": cpu * (search + rows[r]["epochs"]) / total})
    return results


def _single(args: argparse.Namespace, method: str, seed: int, target: float, out: Path
            ) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    finder = {"omp": run_oneshot, "random": run_oneshot, "early-bird": run_early_bird,
              "colt": run_colt}[method]
    if method == "early-bird":
        extra = {"epsilon": args.epsilon, "window": args.window}
    elif method == "colt":
        extra = {"splits": args.splits}
    cfg = FindConfig(method=method, model=args.model, dataset=args.dataset, sparsity=target,
                     rate=args.colt_rate if method == "colt" else 0.2,
                     rewind_epoch=args.rewind, extra=extra,
                     train=TrainConfig(epochs=args.epochs, seed=seed))
    start, cpu0 = time.perf_counter(), time.process_time()
    ticket = finder(cfg, out, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    rows = _rows(out)
    res = {"method": method, "target": target, "seed": seed,
           "sparsity": ticket.mask.sparsity(), "test_acc": rows[-1]["test_acc"],
           "search_epochs": sum(r["epochs"] for r in rows[:-1]), "wall_s": wall,
           "cpu_s": cpu}
    if method == "early-bird":
        res["converged"] = rows[0].get("converged")
    if method == "colt":
        res["cycles"] = sum(1 for r in rows if r.get("phase") == "cycle")
    return res


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(results: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    table = []
    imp_search = {t: statistics.fmean(r["search_epochs"] for r in results
                                      if r["method"] == "imp" and r["target"] == t)
                  for t in {r["target"] for r in results if r["method"] == "imp"}}
    for method in methods:
        for target in sorted({r["target"] for r in results}):
            rs = [r for r in results if r["method"] == method and r["target"] == target]
            if not rs:
                continue
            acc, acc_sd = _mean_std([r["test_acc"] for r in rs])
            search = statistics.fmean(r["search_epochs"] for r in rs)
            row = {"method": method, "target": target,
                   "sparsity": statistics.fmean(r["sparsity"] for r in rs),
                   "test_acc": acc, "test_acc_sd": acc_sd, "search_epochs": search,
                   "wall_s": statistics.fmean(r["wall_s"] for r in rs),
                   "cpu_s": statistics.fmean(r["cpu_s"] for r in rs),
                   "cost_vs_imp": search / imp_search[target] if imp_search.get(target) else None,
                   "seeds": len(rs)}
            if method == "early-bird":
                row["converged"] = sum(bool(r.get("converged")) for r in rs)
            if method == "colt":
                row["cycles"] = statistics.fmean(r["cycles"] for r in rs)
            table.append(row)
    return table


def print_table(table: list[dict[str, Any]]) -> None:
    head = (f"{'method':<11}{'target':>7}{'sparsity':>10}{'test acc %':>16}{'search ep':>11}"
            f"{'wall s':>9}{'cpu s':>8}{'cost/IMP':>10}  note")
    print(head)
    print("-" * len(head))
    for r in table:
        note = ""
        if "converged" in r:
            note = f"stopped early in {r['converged']}/{r['seeds']} seeds"
        if "cycles" in r:
            note = f"{r['cycles']:.1f} cycles"
        cost = f"{r['cost_vs_imp']:.2f}" if r["cost_vs_imp"] is not None else "-"
        print(f"{r['method']:<11}{100 * r['target']:>6.0f}%{100 * r['sparsity']:>9.1f}%"
              f"{r['test_acc']:>10.2f} +-{r['test_acc_sd']:>4.2f}{r['search_epochs']:>11.1f}"
              f"{r['wall_s']:>9.1f}{r['cpu_s']:>8.1f}{cost:>10}  {note}")


def plot(table: list[dict[str, Any]], path: Path, title: str) -> None:
    from ticketmark.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in table):
        rs = [r for r in table if r["method"] == method]
        ax.errorbar([100 * r["sparsity"] for r in rs], [r["test_acc"] for r in rs],
                    yerr=[r["test_acc_sd"] for r in rs], marker="o", capsize=3, label=method)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("test accuracy after retraining (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet300")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--epochs", type=int, default=20, help="training epochs per round")
    p.add_argument("--rewind", type=int, default=0, help="rewind epoch for every finder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--methods", nargs="+", default=["imp", "omp", "early-bird", "colt",
                                                     "random"])
    p.add_argument("--epsilon", type=float, default=0.1, help="early-bird epsilon")
    p.add_argument("--window", type=int, default=5, help="early-bird window")
    p.add_argument("--splits", type=int, default=2, help="COLT data splits")
    p.add_argument("--colt-rate", type=float, default=IMP_RATE,
                   help="COLT per-copy pruning rate per cycle (default: IMP's rate)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench_finders"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    begin = time.perf_counter()
    for seed in args.seeds:
        for method in args.methods:
            if method == "imp":
                results += _imp(args, seed, args.out / f"seed{seed}" / "imp")
                continue
            for target in args.sparsities:
                out = args.out / f"seed{seed}" / f"{method}-{round(100 * target)}"
                results.append(_single(args, method, seed, target, out))
        print(f"seed {seed} done after {time.perf_counter() - begin:.0f} s", flush=True)
    table = summarise(results, args.methods)
    print(f"\n{args.model} on {args.dataset}, {args.epochs} epochs per training, rewind to "
          f"epoch {args.rewind}, seeds {args.seeds}, early-bird eps={args.epsilon} "
          f"window={args.window}, COLT splits={args.splits} rate={args.colt_rate:.3f}\n")
    print_table(table)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", {"args": {k: str(v) for k, v in
                                                           vars(args).items()},
                                                  "runs": results, "table": table})
    plot(table, args.out / "accuracy_vs_sparsity.png",
         f"{args.model} / {args.dataset}: tickets by finder")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'accuracy_vs_sparsity.png'} "
          f"({time.perf_counter() - begin:.0f} s in all)")


if __name__ == "__main__":
    main()
