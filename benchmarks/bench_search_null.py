"""The signature verifier's search null on a ResNet-18: CPU user vs system time, page faults.

    python benchmarks/bench_search_null.py [--calls 2]
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/bench_search_null.py

Random 80% mask per layer (CIFAR shapes), 16 random tags x 8 mask patterns x 4
orientations searched over every fitting layer, one torch thread. Each call prints its CPU
user and system seconds (``getrusage``), minor page faults and a digest of the 16 maxima:
run it against two checkouts to compare their cost and check their output is identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource

import torch

from ticketmark.models import build_model
from ticketmark.ownership.signature.search_null import search_null
from ticketmark.sparsity import Mask, random_prune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 10, 32)
    mask = random_prune(Mask.ones(model), 0.8, seed=0, scope="layer")
    mask.apply(model)
    weights = {n: p.detach() for n, p in model.named_parameters()
               if n in mask and p.dim() == 4}
    print(f"load average {os.getloadavg()[0]:.1f}")
    for call in range(args.calls):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        null = search_null(weights, {}, 1, 10)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        digest = hashlib.sha1(null.maxima.tobytes()).hexdigest()[:12]
        print(f"call {call}: CPU user {user:.2f} s + system {sys_:.2f} s = {user + sys_:.2f} s "
              f"(system {sys_ / (user + sys_):.1%}), minor faults "
              f"{r1.ru_minflt - r0.ru_minflt}, {null.layers} layers, maxima {digest} "
              f"{null.maxima.astype(int).tolist()}")


if __name__ == "__main__":
    main()
