"""The signature against an informed thief: one command regenerates the whole table.

    OMP_NUM_THREADS=1 python benchmarks/eval_signature.py --release release.safetensors \
        --claim signature.claim.json --reveal signed.signature.reveal.json \
        --unsigned runs/t/ticket.safetensors --signed signed.safetensors --out runs/sig_eval

Inputs are what the README's CLI flow makes (find -> embed -> trigger embed): the release
the thief steals, the owner's signature claim and its reveal, the ticket before signing
(accuracy cost, false claims), and optionally the signed ticket before ``trigger embed``
(composition: the signature after each of the owner's steps).

1. Attacks (``ticketmark.attacks`` and ``ticketmark.attacks.informed``): function-
   preserving rescaling (+ tiny fills), permutation, targeted swaps and shuffles of the
   visible block (+ fine-tuning), add-on of pruned entries, pruning, int8/int4, dense SGD
   and Adam fine-tuning, distillation. Weight edits are followed by BatchNorm
   recalibration on the thief's images, as a thief would. Each row: accuracy, the QR
   verdict alone (no reveal), and the verdict with the owner's reveal (hidden bits).
2. False claims: the owner's claim and reveal against unsigned tickets (random masks at
   the same per-layer counts, every IMP round, the unsigned ticket, and independently
   trained tickets given with ``--independent``), at the claimed position and under
   ``--search``: the smallest p-values seen.

Results land in OUT (suspects, ``results.json``, ``results.md``); suspects already made
are reused, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from ticketmark import attacks
from ticketmark.attacks import informed
from ticketmark.data import load_dataset
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import load_state
from ticketmark.models import build_model
from ticketmark.ownership.claims import load_claim
from ticketmark.ownership.signature import verify_claim
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.sparsity import Mask


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def attack_plan(release: Ticket, claim: dict[str, Any], quick: bool
                ) -> list[tuple[str, Any, str]]:
    """(name, (model, data) -> model, alignment: 'none' | 'reference')."""
    p = claim["params"]
    blk = (p["layer"], p["row"], p["col"], p["size"])

    def edit(fn: Any) -> Any:
        return lambda m, d: attacks.recalibrate_bn(fn(m), d)

    def ft_mask(m: torch.nn.Module, d: Any, epochs: int) -> torch.nn.Module:
        return attacks.finetune(m, d, epochs=epochs,
                                keep_mask=Mask.from_weights(m, list(release.mask)))

    plan: list[tuple[str, Any, str]] = [("none", lambda m, d: m, "none")]
    for lo, hi in ((1e-3, 1e3), (1e-3, 1e6)):
        plan.append((f"rescale channels {lo:g}..{hi:g} (BN-compensated)",
                     lambda m, d, lo=lo, hi=hi: informed.rescale(m, lo, hi, seed=1), "none"))
    plan.append(("rescale 1e-3..1e6 + fill empty kernels (1e-4 row norm)",
                 lambda m, d: informed.rescale(m, 1e-3, 1e6, fill_ratio=1e-4, seed=2), "none"))
    plan += [("permute channels", lambda m, d: attacks.permute(m, seed=1), "none"),
             ("permute channels + --reference", lambda m, d: attacks.permute(m, seed=1),
              "reference"),
             ("permute + rescale + --reference",
              lambda m, d: informed.rescale(attacks.permute(m, seed=3), 1e-3, 1e6, seed=3),
              "reference")]
    for f in (0.1, 0.25, 0.5):
        plan.append((f"swap {int(100 * f)}% of the visible block",
                     lambda m, d, f=f: informed.block_edit(m, *blk, fraction=f, seed=4),
                     "none"))
    plan.append(("shuffle the whole block + fine-tune 2 ep (mask kept)",
                 lambda m, d: ft_mask(informed.block_edit(m, *blk, mode="shuffle", seed=5),
                                      d, 2), "none"))
    plan.append(("swap 100% of the block + fine-tune 2 ep",
                 lambda m, d: ft_mask(informed.block_edit(m, *blk, fraction=1.0, seed=6), d,
                                      2), "none"))
    for f in (0.005, 0.02, 0.1):
        plan.append((f"add-on {100 * f:g}% of pruned entries N(0, 0.1^2), all layers",
                     edit(lambda m, f=f: informed.addon(m, f, 0.1, seed=7)), "none"))
    plan.append(("add-on 10% on the code's layer",
                 edit(lambda m: informed.addon(m, 0.1, 0.1, names=[p["layer"]], seed=8)),
                 "none"))
    plan.append(("add-on 10% + --reference",
                 edit(lambda m: informed.addon(m, 0.1, 0.1, seed=7)), "reference"))
    for r in (0.1, 0.3, 0.5, 0.7):
        plan.append((f"prune {int(100 * r)}% more (global magnitude)",
                     edit(lambda m, r=r: attacks.prune(m, r)), "none"))
    plan += [("int8 (per tensor)", edit(lambda m: attacks.quantize(m, scheme="int8")), "none"),
             ("int4 (per tensor)", edit(lambda m: informed.round_bits(m, 4)), "none")]
    epochs = (1, 3) if quick else (1, 3, 5)
    for e in epochs:
        plan.append((f"dense SGD fine-tune {e} ep (lr 0.01)",
                     lambda m, d, e=e: attacks.finetune(m, d, epochs=e, lr=0.01), "none"))
    for e in epochs:
        plan.append((f"dense Adam fine-tune {e} ep (lr 1e-3)",
                     lambda m, d, e=e: informed.adam_finetune(m, d, epochs=e, lr=1e-3), "none"))
    plan.append(("distill into a fresh dense student, 5 ep",
                 lambda m, d: attacks.distill(m, d, epochs=5), "none"))
    return plan


def verify_row(path: Path, claim_path: Path, reveal: Path | None, reference: Path | None,
               search: bool = False) -> dict[str, Any]:
    v = verify_claim(str(path), load_claim(claim_path),
                     VerifyOptions(reveal=reveal, reference=reference, search=search))
    e = v.evidence
    return {"verdict": v.status, "qr_agree": e.get("agree"), "decode": e.get("decode"),
            "log10_p": e.get("log10_p"), "hidden_agree": e.get("hidden_bits_agree"),
            "hidden_read": e.get("hidden_bits_read"), "hidden_log10_p": e.get("hidden_log10_p")}


def attack_step(args: argparse.Namespace, release: Ticket, out: Path, res: dict[str, Any]
                ) -> list[dict[str, Any]]:
    data = load_dataset(release.dataset)
    claim = json.loads(Path(args.claim).read_text())["claim"]
    sus = out / "suspects"
    sus.mkdir(exist_ok=True)
    rows = []
    base = release.build()
    for i, (name, fn, align) in enumerate(attack_plan(release, claim, args.quick)):
        if args.only and not any(s in name for s in args.only):
            continue
        path = sus / f"attack_{i:02d}.safetensors"
        acc_path = path.with_suffix(".acc.json")
        start = time.perf_counter()
        if not (path.exists() and acc_path.exists()):
            model = fn(base, data)
            acc_path.write_text(json.dumps({"acc": attacks_eval(model, data)}))
            save_ticket(path, release.with_model(model, Mask.from_weights(model,
                                                                          list(release.mask))))
        ref = Path(args.release) if align == "reference" else None
        qr_only = verify_row(path, Path(args.claim), None, ref)
        full = verify_row(path, Path(args.claim), Path(args.reveal), ref)
        row = {"attack": name, "acc": json.loads(acc_path.read_text())["acc"],
               "qr_verdict": qr_only["verdict"], **{k: full[k] for k in full},
               "seconds": round(time.perf_counter() - start, 1)}
        log(f"{name}: {row}")
        rows.append(row)
        write(out, res | {"attacks": rows})
    return rows


def attacks_eval(model: torch.nn.Module, data: Any) -> float:
    from ticketmark.training import evaluate

    return float(evaluate(model, data.test)[0])


def shuffled_mask(mask: Mask, seed: int) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    return Mask({n: m.flatten()[torch.randperm(m.numel(), generator=gen)].view(m.shape)
                 for n, m in mask.items()})


def false_claim_step(args: argparse.Namespace, release: Ticket, out: Path) -> dict[str, Any]:
    unsigned = load_ticket(args.unsigned)
    fc = out / "unsigned"
    fc.mkdir(exist_ok=True)
    suspects: list[tuple[str, Path]] = [("unsigned ticket", Path(args.unsigned))]
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.unsigned).parent
    suspects += [(f"IMP {p.parent.name}", p)
                 for p in sorted(run_dir.glob("round_*/ticket.safetensors"))]
    if args.independent:
        suspects += [(f"independent {p.stem}", p)
                     for p in sorted(Path(args.independent).glob("*.safetensors"))]
    for i in range(args.false_claims):
        path = fc / f"random_{i:03d}.safetensors"
        if not path.exists():
            mask = shuffled_mask(release.mask, 1000 + i)
            model = build_model(unsigned.model_name, unsigned.in_channels,
                                unsigned.num_classes, unsigned.image_size)
            load_state(model, unsigned.rewind or unsigned.state)
            mask.apply(model)
            save_ticket(path, unsigned.with_model(model, mask))
        suspects.append((f"random mask {i}", path))
    rows = []
    for name, path in suspects:
        a = verify_row(path, Path(args.claim), Path(args.reveal), None)
        s = verify_row(path, Path(args.claim), Path(args.reveal), None, search=True)
        rows.append({"suspect": name, "verdict": a["verdict"], "log10_p": a["log10_p"],
                     "hidden_log10_p": a["hidden_log10_p"], "search_verdict": s["verdict"],
                     "search_log10_p": s["log10_p"]})
    return {"n": len(rows),
            "owned": sum(r["verdict"] == "OWNED" or r["search_verdict"] == "OWNED"
                         for r in rows),
            "min_log10_p_claimed": min(r["log10_p"] for r in rows),
            "min_log10_p_search": min(r["search_log10_p"] for r in rows),
            "min_hidden_log10_p": min(r["hidden_log10_p"] for r in rows),
            "rows": [r for r in rows if not r["suspect"].startswith("random")]}


def composition_step(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for label, path in (("signed (after embed)", args.signed),
                        ("release (after trigger embed)", args.release)):
        if path:
            t = load_ticket(path)
            acc = t.meta.get("metrics", [{}])[-1].get("test_acc")
            rows.append({"step": label, "acc": acc,
                         **verify_row(Path(path), Path(args.claim), Path(args.reveal), None)})
    return rows


def write(out: Path, res: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text(markdown(res))


def _f(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(res: dict[str, Any]) -> str:
    lines = []
    if res.get("composition"):
        lines += ["## The signature after each of the owner's steps", "",
                  "| step | test acc % | QR agree /441 | decode | hidden agree | verdict |",
                  "|---|---|---|---|---|---|"]
        for r in res["composition"]:
            lines.append(f"| {r['step']} | {_f(r['acc'], '.2f')} | {r['qr_agree']} | "
                         f"{r['decode']} | {r['hidden_agree']}/{r['hidden_read']} | "
                         f"{r['verdict']} |")
        lines.append("")
    lines += ["## Attacks", "",
              "| attack | test acc % | QR agree /441 | decode | QR alone | hidden agree | "
              "log10 p hidden | verdict with reveal |", "|---|---|---|---|---|---|---|---|"]
    for r in res.get("attacks", []):
        lines.append(f"| {r['attack']} | {r['acc']:.2f} | {r['qr_agree']} | {r['decode']} | "
                     f"{r['qr_verdict']} | {r['hidden_agree']}/{r['hidden_read']} | "
                     f"{_f(r['hidden_log10_p'])} | {r['verdict']} |")
    fc = res.get("false_claims")
    if fc:
        lines += ["", "## False claims", "",
                  f"{fc['n']} unsigned tickets, OWNED: {fc['owned']}; smallest log10 p: QR at "
                  f"the claimed position {fc['min_log10_p_claimed']:.2f}, QR under --search "
                  f"{fc['min_log10_p_search']:.2f}, hidden bits {fc['min_hidden_log10_p']:.2f}",
                  ""]
        for r in fc["rows"]:
            lines.append(f"- {r['suspect']}: {r['verdict']} (log10 p {r['log10_p']:.2f}, "
                         f"hidden {r['hidden_log10_p']:.2f}), search {r['search_verdict']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", required=True)
    ap.add_argument("--claim", required=True)
    ap.add_argument("--reveal", required=True)
    ap.add_argument("--unsigned", required=True)
    ap.add_argument("--signed", default=None)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--independent", default=None, help="folder of independently trained "
                                                        "tickets (*.safetensors)")
    ap.add_argument("--false-claims", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="fine-tuning 1 and 3 epochs only")
    ap.add_argument("--only", nargs="*", default=None, help="attacks whose name contains")
    ap.add_argument("--skip-false-claims", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    release = load_ticket(args.release)
    res: dict[str, Any] = {"composition": composition_step(args)}
    log(f"composition: {res['composition']}")
    res["attacks"] = attack_step(args, release, out, res)
    if not args.skip_false_claims:
        log("false claims")
        res["false_claims"] = false_claim_step(args, release, out)
    write(out, res)
    print(markdown(res))


if __name__ == "__main__":
    main()
