"""Independently trained, independently pruned models: the unmarked suspects a false-claim
test needs besides random masks (not made by ticketmark's finders or training loop).

    OMP_NUM_THREADS=1 python benchmarks/make_independent.py --model resnet20s \
        --dataset mnist5k --count 5 --epochs 2 --sparsity 0.83 --out runs/independent

Each model: a fresh initialisation (its own seed), plain Adam training written here, then
``torch.nn.utils.prune.global_unstructured`` (L1) over every conv layer, the way a
PyTorch user would prune. Saved as ticket files so ``verify`` reads them like any suspect.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import prune

from ticketmark.data import TensorLoader, load_dataset
from ticketmark.io import Ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.models import build_model
from ticketmark.sparsity import Mask
from ticketmark.training import evaluate


def independent_ticket(model_name: str, dataset: str, data, seed: int, epochs: int,
                       sparsity: float) -> Ticket:
    """One model trained from its own seed with plain Adam, then pruned by
    ``torch.nn.utils.prune.global_unstructured`` (L1) over every conv layer but the stem."""
    c, h = data.input_shape[0], data.input_shape[1]
    torch.manual_seed(seed)
    model = build_model(model_name, c, data.num_classes, h)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = TensorLoader(data.train, 128, shuffle=True, seed=seed)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    convs = [(m, "weight") for n, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d) and n != "conv1"]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=sparsity)
    for m, _ in convs:
        prune.remove(m, "weight")
    model.eval()
    names = [n for n, p in model.named_parameters() if p.dim() == 4 and n != "conv1.weight"]
    mask = Mask.from_weights(model, names)
    return Ticket(model_name, dataset, c, data.num_classes, h, state_of(model), mask, None,
                  {"made_by": "benchmarks/make_independent.py", "seed": seed})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20s")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sparsity", type=float, default=0.83)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset)
    for seed in range(args.first_seed, args.first_seed + args.count):
        path = out / f"independent_{seed}.safetensors"
        if path.exists():
            continue
        start = time.perf_counter()
        ticket = independent_ticket(args.model, args.dataset, data, seed, args.epochs,
                                    args.sparsity)
        save_ticket(path, ticket)
        acc = evaluate(ticket.build(), data.test)[0]
        print(f"{path.name}: test acc {acc:.2f}% at {ticket.mask.count()} weights "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
