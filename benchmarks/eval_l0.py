"""Learned masks (``find --method l0``) against IMP at the same sparsity, with PGD accuracy.

For each model: IMP in two rounds of rate 1 - sqrt(1 - s) (lands on s = 80%), OMP, the L0
finder without and with the adversarial term (``--l0-adv``), all with the same recipe and
seed; then clean and PGD accuracy (20 steps, one restart) of every final ticket, and of
the L0 finder's un-retrained ticket (``round_1``: the learned mask on the dense weights,
the robust-PLM-tickets paper's setting). Cost is the epochs each search trained (dense +
pruning rounds + mask learning, the final retraining included) and its wall time.

    OMP_NUM_THREADS=1 python benchmarks/eval_l0.py --work /tmp/l0 --dataset digits
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path


def find(work: Path, name: str, model: str, args: argparse.Namespace, *flags: str) -> float:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ticketmark", "find", "--model", model,
                          "--dataset", args.dataset, "--epochs", str(args.epochs),
                          "--rewind-epoch", "1", "--seed", str(args.seed), "--out",
                          str(work / name), "-q", *flags], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"find {name} failed:\n{res.stderr}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", nargs="+", default=["conv4", "resnet20s"])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--l0-epochs", type=int, default=6)
    ap.add_argument("--adv-weight", type=float, default=1.0)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--adv-steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from ticketmark.data import load_dataset
    from ticketmark.io import load_ticket
    from ticketmark.robustness.evaluate import RobustnessOptions, measure

    data = load_dataset(args.dataset)
    opts = RobustnessOptions(eps=[args.eps], steps=20, corruptions=False)
    rate = 1 - math.sqrt(1 - args.sparsity)
    rows = []
    for model in args.models:
        work = Path(args.work) / model
        runs = {
            "IMP (2 rounds)": (["--method", "imp", "--rounds", "2", "--rate", f"{rate:.6f}"],
                               3 * args.epochs),
            "OMP": (["--method", "omp", "--sparsity", str(args.sparsity)], 2 * args.epochs),
            "L0": (["--method", "l0", "--sparsity", str(args.sparsity), "--l0-epochs",
                    str(args.l0_epochs)], 2 * args.epochs + args.l0_epochs),
            f"L0 + adv {args.adv_weight:g}": (
                ["--method", "l0", "--sparsity", str(args.sparsity), "--l0-epochs",
                 str(args.l0_epochs), "--l0-adv", str(args.adv_weight), "--eps", str(args.eps),
                 "--steps", str(args.adv_steps)], 2 * args.epochs + args.l0_epochs),
        }
        for label, (flags, epochs) in runs.items():
            name = label.split()[0].lower() + ("_adv" if "adv" in label else "")
            wall = find(work, name, model, args, *flags)
            targets = [("retrained", work / name)]
            if label.startswith("L0"):
                targets.append(("learned mask, no retraining", work / name / "round_1"))
            for what, path in targets:
                ticket = load_ticket(path)
                m = measure(ticket.build(), data, opts)
                rows.append({"model": model, "finder": label, "ticket": what,
                             "sparsity %": f"{100 * ticket.mask.sparsity():.1f}",
                             "test acc %": f"{m['clean']:.2f}",
                             f"PGD eps {args.eps:g} %": f"{m['pgd'][str(args.eps)]:.2f}",
                             "epochs": str(epochs) if what == "retrained" else "",
                             "wall s": f"{wall:.0f}" if what == "retrained" else ""})
                print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(r[k] for k in keys) + " |")


if __name__ == "__main__":
    main()
