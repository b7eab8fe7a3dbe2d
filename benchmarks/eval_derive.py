"""Does ``derive`` say "derived" for every stolen copy and "not derived" for every stranger?

An owner's ticket (resnet20s on digits by default, IMP with rewinding) is attacked the way
the attack sweep does (fine-tuning, pruning, quantization, noise, filling, permutation,
prune + fine-tune) plus what a thief who read the docs would add: positive per-channel
rescaling (function-preserving with BatchNorm), the thief's own QR embed (retrains from the
owner's rewind weights), a retrain of the owner's mask from the owner's rewind weights with
another seed, a combined prune + permute + rescale, and copies of the owner's signed ticket.
Distillation is left out on purpose: a student trained from scratch on the owner's outputs
shares no weights with it (that is a black-box question: the trigger set answers it).

Independent models: the same recipe (architecture, data, IMP rounds, rate, rewind epoch)
with other seeds. They calibrate the null: the smallest p over them is what "not derived"
must stay above.

Baseline in the same run: the raw Pearson correlation of the flattened weights without
channel alignment (what a naive check would use), with its p-value from the Fisher z and
the number of weights (it calls everything that was permuted "not derived", and, at this
many weights, an unrelated model's small correlations look significant).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/eval_derive.py --independent 20
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ticketmark.attacks import apply_attack
from ticketmark.data import load_dataset
from ticketmark.finding import FindConfig, run_imp
from ticketmark.io import Ticket, load_ticket
from ticketmark.ownership.derive import derive, fmt_p
from ticketmark.training import TrainConfig, evaluate, train

ATTACKS: list[tuple[str, str, dict]] = [
    ("BN recal. only", "noise", {"sigma": 0.0}),
    ("prune global 20%", "prune", {"method": "global", "ratio": 0.2}),
    ("prune global 50%", "prune", {"method": "global", "ratio": 0.5}),
    ("prune global 80%", "prune", {"method": "global", "ratio": 0.8}),
    ("prune global 90%", "prune", {"method": "global", "ratio": 0.9}),
    ("prune layer 50%", "prune", {"method": "layer", "ratio": 0.5}),
    ("prune random 50%", "prune", {"method": "random", "ratio": 0.5}),
    ("quantize int8", "quantize", {"scheme": "int8"}),
    ("quantize int8-channel", "quantize", {"scheme": "int8-channel"}),
    ("quantize ternary", "quantize", {"scheme": "ternary"}),
    ("noise 0.05", "noise", {"sigma": 0.05}),
    ("noise 0.2", "noise", {"sigma": 0.2}),
    ("noise 0.5", "noise", {"sigma": 0.5}),
    ("fill min 0.5", "fill", {"scale": 0.5, "reference": "min"}),
    ("fill std 0.2", "fill", {"scale": 0.2, "reference": "std"}),
    ("permute", "permute", {}),
    ("finetune last 2 ep", "finetune", {"mode": "last", "epochs": 2}),
    ("finetune all 2 ep", "finetune", {"mode": "all", "epochs": 2}),
    ("finetune reinit-last 2 ep", "finetune", {"mode": "reinit-last", "epochs": 2}),
    ("finetune all 5 ep (mask kept)", "finetune", {"mode": "all", "epochs": 5,
                                                   "keep_mask": True}),
    ("prune 80% + finetune 1 ep", "prune", {"method": "global", "ratio": 0.8,
                                            "finetune_epochs": 1}),
]


def rescale_channels(ticket: Ticket, seed: int = 0) -> Ticket:
    """Multiply every conv's output channels by a positive factor, undone by its BatchNorm.

    BN normalises each channel by its running statistics, so scaling a conv's output channel
    by c > 0 and its BN running mean by c and variance by c^2 leaves the function (up to
    BN's epsilon) unchanged, while every raw weight correlation moves.
    """
    g = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in ticket.state.items()}
    for name, w in list(state.items()):
        if w.dim() != 4 or not name.endswith("weight"):
            continue
        bn = _bn_after(name, state)
        if bn is None:
            continue
        c = torch.exp(torch.empty(w.shape[0]).uniform_(-1.0, 1.0, generator=g))
        state[name] = w * c.view(-1, 1, 1, 1)
        state[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] * c
        state[f"{bn}.running_var"] = state[f"{bn}.running_var"] * c * c
    return Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                  ticket.image_size, state, ticket.mask.clone(), ticket.rewind, dict(ticket.meta))


def _bn_after(conv: str, state: dict[str, torch.Tensor]) -> str | None:
    prefix = conv[: -len(".weight")]
    candidates = [prefix.replace("conv", "bn"), prefix[:-1] + "1" if prefix.endswith("0")
                  else None]
    for c in candidates:
        if c and f"{c}.running_mean" in state and c != prefix:
            return c
    return None


def retrain_from_rewind(owner: Ticket, epochs: int, seed: int) -> Ticket:
    """The owner's mask trained again from the owner's rewind weights, another data order."""
    data = load_dataset(owner.dataset)
    model = owner.build("rewind")
    cfg = TrainConfig.from_dict(owner.meta["train"])
    cfg.epochs, cfg.seed = epochs, seed
    train(model, data, cfg, owner.mask, progress=False)
    return owner.with_model(model)


def reembed(owner: Ticket, epochs: int) -> Ticket:
    """The thief's own QR signature embedded into the owner's ticket (retrains from rewind)."""
    from ticketmark.ownership.keys import keygen, load_private_key
    from ticketmark.ownership.signature import EmbedOptions, embed_signature

    with tempfile.TemporaryDirectory() as tmp:
        priv, _ = keygen(Path(tmp) / "thief")
        key = load_private_key(priv)
    return embed_signature(owner, key, "thief", EmbedOptions(epochs=epochs,
                                                             progress=False)).ticket


def extra_copies(owner: Ticket, data, epochs: int, embed: bool) -> list[tuple[str, Ticket]]:
    """What a thief who read the docs adds to the sweep."""
    out = [("rescale channels", rescale_channels(owner))]
    pruned = apply_attack(owner, "prune", {"method": "global", "ratio": 0.5}, data)
    out.append(("prune 50% + permute + rescale",
                rescale_channels(apply_attack(pruned, "permute", {}, data), seed=1)))
    rand = apply_attack(owner, "prune", {"method": "random", "ratio": 0.5}, data)
    rand_perm = apply_attack(rand, "permute", {}, data)
    out.append(("prune random 50% + permute", rand_perm))
    laundered = apply_attack(rand_perm, "finetune", {"mode": "all", "epochs": 3,
                                                     "keep_mask": True}, data)
    out.append(("laundered: random 50% + permute + finetune 3 ep",
                rescale_channels(laundered, seed=2)))
    out.append(("retrain from owner's rewind", retrain_from_rewind(owner, epochs, 7)))
    if embed:
        out.append(("thief's QR embed (re-embedded)", reembed(owner, epochs)))
    return out


def naive_log10_p(suspect: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Baseline: Pearson r of all conv/linear weights flattened, Fisher-z p (one-sided)."""
    keys = [k for k, v in ref.items() if k.endswith("weight") and v.dim() in (2, 4)]
    a = torch.cat([suspect[k].flatten() for k in keys]).double().numpy()
    b = torch.cat([ref[k].flatten() for k in keys]).double().numpy()
    r = float(np.corrcoef(a, b)[0, 1])
    z = math.atanh(min(r, 0.999999)) * math.sqrt(len(a) - 3)
    from scipy.stats import norm

    return float(norm.logsf(z)) / math.log(10)


def find(out: Path, model: str, dataset: str, rounds: int, rate: float, epochs: int,
         seed: int) -> Ticket:
    cfg = FindConfig(model=model, dataset=dataset, rounds=rounds, rate=rate, rewind_epoch=1,
                     train=TrainConfig(epochs=epochs, batch_size=64, seed=seed))
    run_imp(cfg, out, progress=False)
    return load_ticket(out / "ticket.safetensors")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20s")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--independent", type=int, default=20)
    ap.add_argument("--attacks", type=int, default=len(ATTACKS), help="first N attacks only")
    ap.add_argument("--no-embed", action="store_true", help="skip the thief's re-embed row")
    ap.add_argument("--no-copies", action="store_true", help="independent models only")
    ap.add_argument("--first-seed", type=int, default=1000, help="seed of the first "
                                                                  "independent model")
    ap.add_argument("--work", type=Path, default=None, help="keep tickets here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="eval_derive_"))
    t0 = time.time()
    owner = find(work / "owner", args.model, args.dataset, args.rounds, args.rate,
                 args.epochs, seed=0)
    data = load_dataset(args.dataset)
    print(f"owner: {args.model} on {args.dataset}, {100 * owner.mask.sparsity():.1f}% sparse, "
          f"test {evaluate(owner.build(), data.test)[0]:.2f}%  ({time.time() - t0:.0f} s)",
          flush=True)

    copies: list[tuple[str, Ticket]] = []
    for label, kind, params in ATTACKS[: 0 if args.no_copies else args.attacks]:
        copies.append((label, apply_attack(owner, kind, params, data)))
    if not args.no_copies:
        copies += extra_copies(owner, data, args.epochs, not args.no_embed)

    rows = []
    print(f"\n{'derived copy':34s} {'acc %':>6s} {'derive p':>10s} {'closest':>8s} "
          f"{'verdict':>12s} {'naive p':>9s}")
    for label, t in copies:
        d = derive(t.state, owner)
        naive = naive_log10_p(t.state, owner.state)
        acc = evaluate(t.build(), data.test)[0]
        rows.append(("derived", label, d))
        print(f"{label:34s} {acc:6.2f} {fmt_p(d.log10_p):>10s} {d.target:>8s} "
              f"{d.status:>12s} {fmt_p(naive):>9s}", flush=True)

    print(f"\n{'independent model (seed)':34s} {'acc %':>6s} {'derive p':>10s} "
          f"{'closest':>8s} {'verdict':>12s} {'naive p':>9s}")
    for i in range(args.independent):
        seed = args.first_seed + i
        t = find(work / f"indep_{seed}", args.model, args.dataset, args.rounds, args.rate,
                 args.epochs, seed=seed)
        d = derive(t.state, owner)
        naive = naive_log10_p(t.state, owner.state)
        acc = evaluate(t.build(), data.test)[0]
        rows.append(("independent", str(seed), d))
        print(f"{'seed ' + str(seed):34s} {acc:6.2f} {fmt_p(d.log10_p):>10s} {d.target:>8s} "
              f"{d.status:>12s} {fmt_p(naive):>9s}", flush=True)

    der = [d for kind, _, d in rows if kind == "derived"]
    ind = [d for kind, _, d in rows if kind == "independent"]
    if der:
        print(f"\nderived copies: {sum(d.derived for d in der)}/{len(der)} called derived; "
              f"largest p {fmt_p(max(d.log10_p for d in der))}")
    if ind:
        print(f"independent models: {sum(not d.derived for d in ind)}/{len(ind)} called not "
              f"derived; smallest p {fmt_p(min(d.log10_p for d in ind))}")
    print(f"threshold {(der or ind)[0].threshold:g}; {time.time() - t0:.0f} s in all; "
          f"work dir {work}")
    ok = all(d.derived for d in der) and not any(d.derived for d in ind)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
