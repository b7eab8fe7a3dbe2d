"""Acceptance figures for trigger sets (issue 7), with the plain ticket as the baseline.

1. Embed a key-derived set of 100 triggers into a ticket (mnist5k resnet20s or conv4):
   trigger and test accuracy next to the plain ticket's.
2. Attack both the marked and the plain ticket (fine-tuning 5 epochs on the thief's
   disjoint half of the training data, 30% more pruning, int8, and fine-tuning followed
   by int8) and verify each against the owner's claim, from the model file; the marked
   ticket is also verified through a live endpoint on 127.0.0.1.
3. Train >= 20 independent unmarked models (lenet300 and conv2, different seeds) and verify
   each against the owner's claim, plus 20 random seeds against the plain ticket: count
   false claims and report the smallest p-value.

Usage (CPU, a few minutes)::

    OMP_NUM_THREADS=1 python benchmarks/eval_trigger.py \
        --ticket /work/runs/resnet20s_mnist5k/ticket.safetensors --out /tmp/eval_trigger
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ticketmark.attacks import finetune, prune, quantize
from ticketmark.data import DataSplits
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.models import build_model
from ticketmark.ownership.claims import Claim, make_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.trigger.commitment import save_seed
from ticketmark.ownership.trigger.embed import EmbedConfig, embed, load_ticket_data
from ticketmark.ownership.trigger.generate import derive_seed, random_seed
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.serving import make_server, serve_in_thread
from ticketmark.sparsity import Mask, prunable_names
from ticketmark.training import TrainConfig, evaluate, seed_everything, train


def _verify(model: torch.nn.Module, like: Ticket, claim: Claim, seed_file: Path, work: Path,
            name: str, report: bool = False) -> dict:
    path = save_ticket(work / f"{name}.safetensors", like.with_model(model))
    opts = VerifyOptions(reveal=seed_file, report_dir=work / name if report else None)
    v = verify_claim(str(path), claim, opts)
    return {"status": v.status, "matches": v.evidence.get("matches"), "p": v.p_value}


def _row(name: str, test: float, marked: dict, plain: dict | None) -> str:
    base = (f"{plain['matches']:>3}/100  {plain['p']:.2e}  {plain['status']:<10}"
            if plain else " " * 31)
    return (f"{name:<24} {test:6.2f}  {marked['matches']:>3}/100  {marked['p']:.2e}  "
            f"{marked['status']:<10} | {base}")


def attacks(marked: torch.nn.Module, plain: torch.nn.Module, data: DataSplits,
            mask: Mask, epochs: int) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    def ft(m: torch.nn.Module) -> torch.nn.Module:
        return finetune(m, data, epochs=epochs, mode="all", keep_mask=mask, thief_fraction=0.5)

    out = {"none": (marked, plain)}
    ft_m, ft_p = ft(marked), ft(plain)
    out[f"finetune {epochs} ep (thief)"] = (ft_m, ft_p)
    out["prune +30%"] = (prune(marked, 0.3), prune(plain, 0.3))
    out["int8"] = (quantize(marked, scheme="int8"), quantize(plain, scheme="int8"))
    out["finetune + int8"] = (quantize(ft_m, scheme="int8"), quantize(ft_p, scheme="int8"))
    out["finetune + prune + int8"] = (quantize(prune(ft_m, 0.3), scheme="int8"),
                                      quantize(prune(ft_p, 0.3), scheme="int8"))
    return out


def unmarked_models(data: DataSplits, count: int, cache: Path | None = None
                    ) -> list[tuple[str, torch.nn.Module]]:
    """Independently trained models: lenet300 (2 epochs) and conv2 (1 epoch), own seeds.

    With ``cache``, each model's weights are kept there and reused by later runs.
    """
    from safetensors.torch import load_file, save_file

    models = []
    for i in range(count):
        name = "lenet300" if i % 3 else "conv2"
        seed_everything(1000 + i)
        m = build_model(name, data.in_channels, data.num_classes, data.image_size)
        stored = cache / f"{data.name}_{name}_{i}.safetensors" if cache else None
        if stored is not None and stored.is_file():
            m.load_state_dict(load_file(stored))
        else:
            cfg = TrainConfig(epochs=2 if name == "lenet300" else 1, batch_size=128,
                              seed=1000 + i)
            train(m, data, cfg.with_model_defaults(name), None, progress=False)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                save_file(state_of(m), str(stored))
        models.append((f"{name}#{i}", m))
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticket", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="eval_trigger_")))
    ap.add_argument("--key", type=Path, help="owner key (default: a fresh one in --out)")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=None, help="embedding epochs")
    ap.add_argument("--ft-epochs", type=int, default=5)
    ap.add_argument("--unmarked", type=int, default=20)
    ap.add_argument("--skip-unmarked", action="store_true")
    ap.add_argument("--unmarked-cache", type=Path, help="keep/reuse unmarked models here")
    ap.add_argument("--train-unmarked-only", action="store_true",
                    help="only train the unmarked models into --unmarked-cache")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    key_path = args.key or keygen(work / "owner")[0]
    key = load_private_key(key_path)
    plain_t = load_ticket(args.ticket)
    data = load_ticket_data(plain_t, None)
    if args.train_unmarked_only:
        for name, m in unmarked_models(data, args.unmarked, args.unmarked_cache):
            print(f"{name}: test {evaluate(m, data.test)[0]:.2f}%", flush=True)
        return
    seed = derive_seed(key, plain_t.fingerprint())

    t0 = time.perf_counter()
    res = embed(plain_t, EmbedConfig(size=100, ratio=args.ratio, epochs=args.epochs),
                seed=seed, data=data, progress=False)
    embed_s = time.perf_counter() - t0
    claim = make_claim(key, "trigger", plain_t.fingerprint(), res.claim_params, "eval")
    save_claim(work / "claim.json", claim)
    seed_file = save_seed(work / "seed.json", seed, res.trigger.excluded())
    save_ticket(work / "marked.safetensors", res.ticket)
    r = res.report
    print(f"# trigger embedding on {plain_t.model_name}/{plain_t.dataset} "
          f"({100 * plain_t.mask.sparsity():.1f}% sparse), {r['epochs']} epochs, "
          f"ratio {args.ratio}, repeat {r['repeat']}, {embed_s:.0f} s")
    print(f"plain  : test {r['plain_test_acc']:.2f}%  trigger {r['plain_trigger_acc']:.1f}%")
    print(f"marked : test {r['test_acc']:.2f}%  trigger {r['trigger_acc']:.1f}%  "
          f"(test drop {r['test_acc_drop']:+.2f} points)")

    marked, plain = res.ticket.build(), plain_t.build()
    print(f"\n{'attack':<24} {'test%':>6}  {'marked: matches  p  verdict':<31} | "
          f"plain (baseline): matches  p  verdict")
    rows = []
    for name, (m, p) in attacks(marked, plain, data, plain_t.mask, args.ft_epochs).items():
        tag = name.replace(" ", "_").replace("+", "p").replace("%", "")
        vm = _verify(m, res.ticket, claim, seed_file, work, f"m_{tag}", report=name == "none")
        vp = _verify(p, plain_t, claim, seed_file, work, f"p_{tag}")
        test = evaluate(m, data.test)[0]
        print(_row(name, test, vm, vp), flush=True)
        rows.append({"attack": name, "test_acc": test, "marked": vm, "plain": vp})

    server = make_server(marked, (plain_t.in_channels, plain_t.image_size,
                                  plain_t.image_size), plain_t.num_classes)
    serve_in_thread(server)
    try:
        v = verify_claim(server.url, claim, VerifyOptions(reveal=seed_file, timeout=30))
    finally:
        server.shutdown()
        server.server_close()
    print(f"endpoint {server.url}: {v.status}, {v.evidence.get('matches')}/100, "
          f"p = {v.p_value:.2e}")

    if not args.skip_unmarked:
        results = []
        for name, m in unmarked_models(data, args.unmarked, args.unmarked_cache):
            dense = Mask({n: torch.ones_like(dict(m.named_parameters())[n], dtype=torch.bool)
                          for n in prunable_names(m)})
            like = Ticket(name.split("#")[0], plain_t.dataset, plain_t.in_channels,
                          plain_t.num_classes, plain_t.image_size, state_of(m), dense)
            vr = _verify(m, like, claim, seed_file, work, f"u_{name.replace('#', '_')}")
            results.append((name, evaluate(m, data.test)[0], vr))
        for i in range(20):  # random seeds (fresh claims) against the plain ticket
            s = random_seed()
            rc = make_claim(key, "trigger", plain_t.fingerprint(),
                            res.claim_params | _claim_for(s, res.claim_params), "null")
            sf = save_seed(work / f"null_seed_{i}.json", s, [])
            results.append((f"plain ticket, random seed #{i}", r["plain_test_acc"],
                            _verify(plain, plain_t, rc, sf, work, "p_null")))
        false = [n for n, _, v in results if v["status"] == "OWNED"]
        smallest = min(results, key=lambda t: t[2]["p"])
        print(f"\n# {len(results)} unmarked checks ({args.unmarked} independent models, "
              f"20 random seeds on the plain ticket)")
        for name, acc, vr in results:
            print(f"  {name:<32} test {acc:6.2f}%  {vr['matches']:>3}/100  p = {vr['p']:.3g}")
        print(f"false claims: {len(false)}  smallest p: {smallest[2]['p']:.3g} ({smallest[0]})")
        rows.append({"unmarked": [{"name": n, "test_acc": a, **v} for n, a, v in results]})
    (work / "eval_trigger.json").write_text(json.dumps({"embed": r, "rows": rows}, indent=2,
                                                       default=str))
    print(f"\nfiles in {work}")


def _claim_for(seed: bytes, params: dict) -> dict:
    """Claim params for a fresh seed with the same public trigger parameters."""
    from ticketmark.ownership.trigger.commitment import secret_hash
    from ticketmark.ownership.trigger.embed import claim_params
    from ticketmark.ownership.trigger.generate import TriggerParams

    return claim_params("derived", secret_hash(seed), TriggerParams.from_dict(params["trigger"]),
                        [])


if __name__ == "__main__":
    main()
