"""Attack building blocks against straightforward baselines, in one run.

* effective bits: one sort per tensor (vectorised run counting) vs ``torch.unique`` per row;
* permutation: the fx-graph channel groups (built once) + ``index_select`` per member vs
  deep-copying the model and permuting module by module with Python loops over channels.

    python benchmarks/bench_attacks.py [--model resnet18]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch import nn

from ticketmark.attacks import channel_groups, effective_bits, permute_with_perms, quantize
from ticketmark.models import build_model


def _bits_baseline(model: nn.Module) -> float:
    total = bits = 0.0
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            distinct = max(len(torch.unique(row)) for row in w)
            bits += (math.log2(distinct) if distinct > 1 else 0.0) * w.numel()
            total += w.numel()
    return bits / total


def _permute_baseline(model: nn.Module, groups, perms) -> nn.Module:
    """Same permutation, applied channel by channel (one slice copy per channel)."""
    out = copy.deepcopy(model)
    state = out.state_dict()
    for g, p in zip(groups, perms, strict=True):
        for mem in g.members:
            src = state[mem.key].clone()
            dst = state[mem.key]
            for new, old in enumerate(p.tolist()):
                sl_new = [slice(None)] * src.dim()
                sl_old = [slice(None)] * src.dim()
                sl_new[mem.dim] = slice(new * mem.block, (new + 1) * mem.block)
                sl_old[mem.dim] = slice(old * mem.block, (old + 1) * mem.block)
                dst[tuple(sl_new)] = src[tuple(sl_old)]
    return out


def _time(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, 3, 10, args.size).eval()
    q = quantize(model, scheme="int8-channel")

    t_fast, fast = _time(lambda: effective_bits(q).bits)
    t_base, base = _time(lambda: _bits_baseline(q), repeat=1)
    assert abs(fast - base) < 1e-9, (fast, base)

    t_groups, groups = _time(lambda: channel_groups(model))
    t_perm, (out, groups, perms) = _time(lambda: permute_with_perms(model, seed=1))
    t_pbase, ref = _time(lambda: _permute_baseline(model, groups, perms), repeat=1)
    same = all(torch.equal(a, b) for a, b in zip(out.state_dict().values(),
                                                 ref.state_dict().values(), strict=True))
    assert same

    print(f"model {args.model}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(groups)} channel groups, torch threads {torch.get_num_threads()}")
    print("| task | ticketmark | baseline | speed-up |\n|---|---:|---:|---:|")
    print(f"| effective bits (int8-channel) | {t_fast * 1e3:.1f} ms | {t_base * 1e3:.1f} ms "
          f"(unique per row) | {t_base / t_fast:.1f}x |")
    print(f"| permute (graph {t_groups * 1e3:.0f} ms incl.) | {t_perm * 1e3:.1f} ms | "
          f"{t_pbase * 1e3:.1f} ms (slice per channel) | {t_pbase / t_perm:.1f}x |")


if __name__ == "__main__":
    main()
