"""Acceptance figures for trigger sets (issues 7 and 16): what survives a thief's attacks.

1. Embed a key-bound set of 100 queries into a ticket (e.g. resnet20s on mnist5k) with the
   chosen mark (``--mark patch``: keyed patches on the owner's real images, the default;
   ``--mark abstract``: the classic abstract images, the design before issue 16 and the
   baseline to run next to it). Trigger and test accuracy next to the plain ticket's.
2. Attack the marked ticket as a thief would, on the thief's disjoint half of the training
   data, and verify every copy from its model file against the owner's claim:
   dense Adam (lr 1e-3) and dense SGD (lr 0.01, momentum 0.9) fine-tuning after 1, 3 and
   5 epochs; distillation into a fresh dense student from the suspect's soft labels
   (T = 4) after 1, 3, 5 and 10 epochs, and from its hard labels (top-1 only, what an API
   gives) after 5 and 10; 30% and 50% more magnitude pruning; int8; and combinations.
   The plain ticket, attacked by the strongest fine-tuning, is the no-watermark row.
3. ``--unmarked N`` independently trained models (lenet300 and conv2 with their own
   seeds, widths of training, not made by ticketmark's finder) verified against the
   owner's claim: false claims and the smallest p.

Usage (CPU; ``--mark abstract`` is the before, ``--mark patch`` the after)::

    OMP_NUM_THREADS=1 python benchmarks/eval_trigger.py --mark patch \\
        --ticket runs/r20m5k/ticket.safetensors --out /tmp/eval_patch --unmarked 40
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.attacks import prune, quantize, thief_splits
from ticketmark.attacks.distill import _reinit
from ticketmark.data import DataSplits
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.models import build_model
from ticketmark.ownership.claims import Claim, make_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.trigger.commitment import save_reveal
from ticketmark.ownership.trigger.embed import (
    EmbedConfig,
    default_patch,
    embed,
    load_ticket_data,
)
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.sparsity import Mask, prunable_names
from ticketmark.training import TrainConfig, evaluate, predict, seed_everything, train


def random_patches(x: torch.Tensor, side: int, share: float, lo: float, hi: float,
                   gen: torch.Generator) -> torch.Tensor:
    """``x`` with a random black-and-white ``side``-pixel patch at a random place on about
    ``share`` of the images: an informed thief who has read that marks are such patches
    and trains the model to ignore them (labels stay the images' own)."""
    n, c, h, w = x.shape
    pick = torch.rand(n, generator=gen) < share
    top = torch.randint(0, h - side + 1, (n, 1), generator=gen)
    left = torch.randint(0, w - side + 1, (n, 1), generator=gen)
    rows = (torch.arange(h) >= top) & (torch.arange(h) < top + side)
    cols = (torch.arange(w) >= left) & (torch.arange(w) < left + side)
    inside = (rows[:, :, None] & cols[:, None, :] & pick[:, None, None])[:, None]
    pattern = torch.where(torch.rand(n, c, h, w, generator=gen) < 0.5, lo, hi)
    return torch.where(inside, pattern, x)


def thief_training(model: nn.Module, data: DataSplits, *, optimizer: str, lr: float,
                   epochs: list[int], targets: torch.Tensor | None = None,
                   temperature: float = 4.0, fresh: bool = False, batch_size: int = 128,
                   patch_side: int = 0) -> Iterator[tuple[int, nn.Module]]:
    """Dense training on the thief's half; yields a copy after each epoch in ``epochs``.

    ``targets``: the suspect's logits on the thief's images (soft-label distillation,
    KL at ``temperature``) or its top-1 labels (hard-label distillation); None: the
    thief's own labels (fine-tuning). ``fresh`` re-initialises the student first.
    ``patch_side``: paste random patches of that side on half the images
    (``random_patches``).
    """
    m = copy.deepcopy(model).train()
    if fresh:
        seed_everything(0)
        _reinit(m)
    thief = thief_splits(data, 0.5).train
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(m.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    lo, hi = float(data.train.x.min()), float(data.train.x.max())
    for epoch in range(1, max(epochs, default=0) + 1):
        m.train()
        for idx in torch.randperm(len(thief), generator=gen).split(batch_size):
            x = thief.x[idx]
            if patch_side:
                x = random_patches(x, patch_side, 0.5, lo, hi, gen)
            out = m(x)
            if targets is None:
                loss = F.cross_entropy(out, thief.y[idx])
            elif targets.dtype == torch.long:
                loss = F.cross_entropy(out, targets[idx])
            else:
                t = temperature
                loss = F.kl_div(F.log_softmax(out / t, 1), F.softmax(targets[idx] / t, 1),
                                reduction="batchmean") * t * t
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch in epochs:
            yield epoch, copy.deepcopy(m).eval()


def attacks(marked: nn.Module, data: DataSplits, groups: set[str]
            ) -> Iterator[tuple[str, nn.Module]]:
    """The thief's attacks, by group: none, prune, int8, adam, sgd, informed, distill."""
    yield "none", marked
    if "prune" in groups:
        yield "prune +30%", prune(marked, 0.3)
        yield "prune +50%", prune(marked, 0.5)
    if "int8" in groups:
        yield "int8", quantize(marked, scheme="int8")
    if "adam" in groups:
        adam3 = None
        for ep, m in thief_training(marked, data, optimizer="adam", lr=1e-3, epochs=[1, 3, 5]):
            adam3 = m if ep == 3 else adam3
            yield f"dense Adam 1e-3, {ep} ep", m
        assert adam3 is not None
        yield "Adam 3 ep + prune 30% + int8", quantize(prune(adam3, 0.3), scheme="int8")
    if "sgd" in groups:
        sgd5 = None
        for ep, m in thief_training(marked, data, optimizer="sgd", lr=0.01, epochs=[1, 3, 5]):
            sgd5 = m if ep == 5 else sgd5
            yield f"dense SGD 0.01, {ep} ep", m
        assert sgd5 is not None
        yield "SGD 5 ep + int8", quantize(sgd5, scheme="int8")
    if "informed" in groups:  # the thief knows marks are patches: train them away
        side = default_patch(data.image_size)
        for opt, lr, last in (("adam", 1e-3, 3), ("sgd", 0.01, 5)):
            for ep, m in thief_training(marked, data, optimizer=opt, lr=lr, epochs=[last],
                                        patch_side=side):
                yield f"{opt} {ep} ep + random patches", m
    if "distill" in groups:
        thief_x = thief_splits(data, 0.5).train.x
        soft = predict(marked, thief_x)
        for ep, m in thief_training(marked, data, optimizer="sgd", lr=0.05,
                                    epochs=[1, 3, 5, 10], targets=soft, fresh=True):
            yield f"distill soft, {ep} ep", m
        hard = soft.argmax(1)
        for ep, m in thief_training(marked, data, optimizer="sgd", lr=0.05, epochs=[5, 10],
                                    targets=hard, fresh=True):
            yield f"distill hard, {ep} ep", m


def _verify(model: nn.Module, like: Ticket, claim: Claim, reveal: Path, work: Path,
            name: str) -> dict:
    path = save_ticket(work / "models" / f"{name}.safetensors", like.with_model(model))
    v = verify_claim(str(path), claim, VerifyOptions(reveal=reveal))
    return {"status": v.status, "matches": v.evidence.get("matches"), "p": v.p_value,
            "p_top1": v.evidence.get("p_top1", v.p_value),
            "p_rank": v.evidence.get("p_rank", float("nan")),
            "rank_points": v.evidence.get("rank_points")}


def unmarked_models(data: DataSplits, count: int, cache: Path | None = None
                    ) -> Iterator[tuple[str, nn.Module]]:
    """Independently trained models: lenet300 (1-3 epochs) and conv2 (1-2), own seeds.

    With ``cache``, each model's weights are kept there and reused by later runs.
    """
    from safetensors.torch import load_file, save_file

    for i in range(count):
        name = "conv2" if i % 4 == 0 else "lenet300"
        epochs = 1 + (i // 4) % (2 if name == "conv2" else 3)
        seed_everything(2000 + i)
        m = build_model(name, data.in_channels, data.num_classes, data.image_size)
        stored = cache / f"{data.name}_{name}_{i}_{epochs}.safetensors" if cache else None
        if stored is not None and stored.is_file():
            m.load_state_dict(load_file(stored))
        else:
            cfg = TrainConfig(epochs=epochs, batch_size=128, seed=2000 + i)
            train(m, data, cfg.with_model_defaults(name), None, progress=False)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                save_file(state_of(m), str(stored))
        yield f"{name}#{i} ({epochs} ep)", m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticket", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="eval_trigger_")))
    ap.add_argument("--key", type=Path, help="owner key (default: a fresh one in --out)")
    ap.add_argument("--mark", default="patch", choices=["patch", "blend", "abstract"])
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--train-bases", type=int, default=40)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=None, help="embedding epochs")
    ap.add_argument("--perturbation", default=None,
                    help="trigger hardening: adversarial, thief, random or none "
                         "(default: EmbedConfig's)")
    ap.add_argument("--rho", type=float, default=None, help="hardening radius")
    ap.add_argument("--entangle", type=float, default=None,
                    help="weight of the entanglement pull (default: EmbedConfig's)")
    ap.add_argument("--nonce", default=None, help="claim nonce (default: a fresh one)")
    ap.add_argument("--unmarked", type=int, default=0, help="independent unmarked models")
    ap.add_argument("--unmarked-cache", type=Path, help="keep/reuse unmarked models here")
    ap.add_argument("--attacks", default="prune,int8,adam,sgd,informed,distill,plain",
                    help="attack groups to run (comma-separated; empty: none)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    key = load_private_key(args.key or keygen(work / "owner")[0])
    plain_t = load_ticket(args.ticket)
    data = load_ticket_data(plain_t, None)

    t0 = time.perf_counter()
    cfg = EmbedConfig(size=100, groups=args.groups, mark=args.mark, alpha=args.alpha,
                      train_bases=args.train_bases, ratio=args.ratio, epochs=args.epochs)
    if args.perturbation is not None:
        cfg.perturbation = args.perturbation
    if args.rho is not None:
        cfg.rho = args.rho
    if args.entangle is not None:
        cfg.entangle = args.entangle
    res = embed(plain_t, cfg, key, data=data, progress=False, nonce=args.nonce)
    embed_s = time.perf_counter() - t0
    claim = make_claim(key, "trigger", plain_t.fingerprint(), res.claim_params, "eval")
    save_claim(work / "claim.json", claim)
    assert res.reveal is not None
    reveal = save_reveal(work / "reveal.json", res.reveal)
    save_ticket(work / "marked.safetensors", res.ticket)
    r = res.report
    print(f"# trigger embedding ({args.mark}, {r['groups']} groups) on {plain_t.model_name}/"
          f"{plain_t.dataset} ({100 * plain_t.mask.sparsity():.1f}% sparse), {r['epochs']} "
          f"epochs, ratio {args.ratio}, {r['trained_images']} trigger images x{r['repeat']}, "
          f"hardening {r['perturbation']} rho {r['rho']}, entangle {r['entangle']}, "
          f"{embed_s:.0f} s")
    print(f"plain  : test {r['plain_test_acc']:.2f}%  trigger {r['plain_trigger_acc']:.1f}%")
    print(f"marked : test {r['test_acc']:.2f}%  trigger {r['trigger_acc']:.1f}%  "
          f"(test drop {r['test_acc_drop']:+.2f} points)", flush=True)

    rows: list[dict] = []
    groups = {g.strip() for g in args.attacks.split(",") if g.strip()}
    if groups:
        marked = res.ticket.build()
        print(f"\n{'attack':<30} {'test%':>6}  {'matches':>7}  {'p top-1':>9}  "
              f"{'p rank':>9}  {'p':>9}  verdict")
        for name, m in attacks(marked, data, groups):
            tag = "".join(c if c.isalnum() else "_" for c in name)
            v = _verify(m, res.ticket, claim, reveal, work, f"m_{tag}")
            test = evaluate(m, data.test)[0]
            print(f"{name:<30} {test:6.2f}  {v['matches']:>3}/100  {v['p_top1']:9.2e}  "
                  f"{v['p_rank']:9.2e}  {v['p']:9.2e}  {v['status']}", flush=True)
            rows.append({"attack": name, "test_acc": test, **v})
        plain = plain_t.build()
        for _, m in thief_training(plain, data, optimizer="adam", lr=1e-3,
                                   epochs=[5] if "plain" in groups else []):
            v = _verify(m, plain_t, claim, reveal, work, "plain_adam5")
            print(f"{'plain ticket, Adam 5 ep':<30} {evaluate(m, data.test)[0]:6.2f}  "
                  f"{v['matches']:>3}/100  {v['p_top1']:9.2e}  {v['p_rank']:9.2e}  "
                  f"{v['p']:9.2e}  {v['status']}  (no watermark)")
            rows.append({"attack": "plain ticket, Adam 5 ep", **v})

    if args.unmarked:
        results = []
        for name, m in unmarked_models(data, args.unmarked, args.unmarked_cache):
            dense = Mask({n: torch.ones_like(dict(m.named_parameters())[n], dtype=torch.bool)
                          for n in prunable_names(m)})
            like = Ticket(name.split("#")[0], plain_t.dataset, plain_t.in_channels,
                          plain_t.num_classes, plain_t.image_size, state_of(m), dense)
            v = _verify(m, like, claim, reveal, work, "unmarked")
            results.append((name, evaluate(m, data.test)[0], v))
            print(f"  {name:<22} test {results[-1][1]:6.2f}%  {v['matches']:>3}/100  "
                  f"p top-1 {v['p_top1']:.3g}  p rank {v['p_rank']:.3g}  p = {v['p']:.3g}",
                  flush=True)
        false = [n for n, _, v in results if v["status"] == "OWNED"]
        smallest = min(results, key=lambda t: t[2]["p"])
        print(f"# {len(results)} independently trained unmarked models: false claims "
              f"{len(false)}, smallest p {smallest[2]['p']:.3g} ({smallest[0]})")
        rows.append({"unmarked": [{"name": n, "test_acc": a, **v} for n, a, v in results]})
    (work / "eval_trigger.json").write_text(json.dumps({"embed": r, "rows": rows}, indent=2,
                                                       default=str))
    print(f"\nfiles in {work}")


if __name__ == "__main__":
    main()
