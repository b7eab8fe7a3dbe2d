"""Masked vs dense training throughput and peak memory, in one run.

    python benchmarks/bench_training.py [--steps 30] [--batch 128]

Each configuration runs in its own subprocess so its peak RSS is its own. The mask
enforcement (two fused multiplies per step) is also timed alone, as a share of step time;
the target is under 10%.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ticketmark.models import build_model
from ticketmark.sparsity import Mask, random_prune

CASES = [("resnet20s", 3, 32), ("conv4", 3, 32)]


def run_case(model_name: str, channels: int, size: int, masked: bool, steps: int,
             batch: int) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name, channels, 10, size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    enforcer = None
    if masked:
        mask = random_prune(Mask.ones(model), 0.8)
        mask.apply(model)
        enforcer = mask.enforcer(model)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))
    enforce_s = 0.0
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            start, enforce_s = time.perf_counter(), 0.0
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        t0 = time.perf_counter()
        if enforcer:
            enforcer.before_step()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if enforcer:
            enforcer.after_step()
        enforce_s += (t1 - t0) + (time.perf_counter() - t2)
    total = time.perf_counter() - start
    return {"images_per_s": steps * batch / total, "step_ms": 1000 * total / steps,
            "enforce_share": enforce_s / total,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        name, masked, size = args.child
        print(json.dumps(run_case(name, 3, int(size), masked == "1", args.steps, args.batch)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.steps} timed steps, 80% random-sparse mask\n")
    print(f"{'model':<10} {'mode':<7} {'img/s':>8} {'step ms':>8} {'enforce %':>9} "
          f"{'peak RSS MB':>11} {'masked/dense':>12}")
    for name, _, size in CASES:
        rows = {}
        for masked in ("0", "1"):
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps),
                                  "--batch", str(args.batch), "--child", name, masked,
                                  str(size)], capture_output=True, text=True, check=True)
            rows[masked] = json.loads(out.stdout)
        for masked, label in (("0", "dense"), ("1", "masked")):
            r = rows[masked]
            ratio = r["step_ms"] / rows["0"]["step_ms"]
            print(f"{name:<10} {label:<7} {r['images_per_s']:>8.1f} {r['step_ms']:>8.1f} "
                  f"{100 * r['enforce_share']:>9.2f} {r['peak_rss_mb']:>11.0f} {ratio:>12.3f}")


if __name__ == "__main__":
    main()
