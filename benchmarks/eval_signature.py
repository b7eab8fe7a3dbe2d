"""Acceptance measurements of the signature scheme (issue #10), re-runnable end to end.

    OMP_NUM_THREADS=2 python benchmarks/eval_signature.py \
        --ticket /work/runs/resnet20s_mnist5k/ticket.safetensors --out /work/runs/signature_eval

1. Embed a signature with a fresh owner key and retrain with the ticket's own recipe;
   optionally (``--control``) retrain the unsigned mask with the same recipe, so the
   accuracy change of embedding can be told apart from retraining noise.
2. Attack the signed ticket with ``ticketmark.attacks`` and verify each stolen copy through
   the public API (``verify_claim``): flip rate in the block, p-value, decode, verdict.
3. False claims: the owner's claim against >= 100 unsigned tickets (random masks at the
   signed ticket's per-layer densities, plus the unsigned original and every IMP round),
   at the claimed position and with ``--search``; the smallest chance p-value seen.
4. Calibration of the chance p-value on unmarked tickets: random codes at random
   positions; the fraction of p-values under alpha must not exceed alpha.

Everything lands in OUT (tickets, claims, ``results.json``, ``results.md``); steps whose
output already exists are reused, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketmark import attacks
from ticketmark.data import load_dataset
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.io.ticket import load_state
from ticketmark.models import build_model
from ticketmark.ownership.claims import load_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import (
    EmbedOptions,
    embed_signature,
    placement,
    qr,
    stats,
    verify_claim,
)
from ticketmark.ownership.signature.embed import layer_connectivity
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.sparsity import Mask
from ticketmark.training import TrainConfig, evaluate, train


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def embed_step(args: argparse.Namespace, out: Path) -> tuple[Ticket, Path, dict[str, Any]]:
    signed_path, claim_path = out / "signed.safetensors", out / "signed.claim.json"
    summary_path = out / "embed_summary.json"
    if signed_path.exists() and claim_path.exists() and summary_path.exists():
        return load_ticket(signed_path), claim_path, json.loads(summary_path.read_text())
    if not (out / "owner.pem").exists():
        keygen(out / "owner")
    key = load_private_key(out / "owner.pem")
    ticket = load_ticket(args.ticket)
    start = time.perf_counter()
    res = embed_signature(ticket, key, args.message,
                          EmbedOptions(min_entries=args.min_entries, epochs=args.epochs,
                                       floor_quantile=args.floor_quantile, progress=False))
    res.summary["embed_seconds"] = time.perf_counter() - start
    save_ticket(signed_path, res.ticket)
    save_claim(claim_path, res.claim)
    summary_path.write_text(json.dumps(res.summary, indent=1))
    return res.ticket, claim_path, res.summary


def control_step(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Retrain the unsigned mask from the rewind point with the same recipe."""
    path = out / "control.json"
    if path.exists():
        return json.loads(path.read_text())
    ticket = load_ticket(args.ticket)
    data = load_dataset(ticket.dataset)
    cfg = TrainConfig.from_dict(ticket.meta["train"]).with_model_defaults(ticket.model_name)
    if args.epochs is not None:
        cfg.epochs, cfg.milestones = args.epochs, []
    model = ticket.build("rewind")
    train(model, data, cfg, ticket.mask, progress=False)
    row = {"acc_original": evaluate(ticket.build(), data.test)[0],
           "acc_retrained_unsigned": evaluate(model, data.test)[0]}
    path.write_text(json.dumps(row))
    return row


def attack_plan(signed: Ticket, ft_epochs: int) -> list[tuple[str, Any, bool]]:
    """(name, model -> model, verify with --reference); training-free attacks first, so a
    run cut short still has most of the table."""
    def ft(keep: bool):
        return lambda m, d: attacks.finetune(m, d, epochs=ft_epochs,
                                             keep_mask=signed.mask if keep else None)

    def edit(fn: Any) -> Any:
        # Weight edits are followed by BatchNorm recalibration on the thief's images, as in
        # ``ticketmark attack``: it changes no conv weight, only the accuracy column.
        return lambda m, d: attacks.recalibrate_bn(fn(m), d)

    plan: list[tuple[str, Any, bool]] = [("none", lambda m, d: m, False)]
    for r in (0.1, 0.3, 0.5, 0.7):
        plan.append((f"prune {int(100 * r)}% (global magnitude)",
                     edit(lambda m, r=r: attacks.prune(m, r)), False))
    plan += [
        ("int8 (per tensor)", edit(lambda m: attacks.quantize(m, scheme="int8")), False),
        ("ternary (TWN 0.7)", edit(lambda m: attacks.quantize(m, scheme="ternary")), False),
        ("fill pruned (0.01 x min|w|)", edit(lambda m: attacks.fill(m, 0.01)), False),
        ("fill pruned (0.5 x std)", edit(lambda m: attacks.fill(m, 0.5, reference="std")),
         False),
        ("gaussian noise 0.1 std", edit(lambda m: attacks.noise(m, 0.1)), False),
        ("gaussian noise 0.5 std", edit(lambda m: attacks.noise(m, 0.5)), False),
        ("permute, no reference", lambda m, d: attacks.permute(m, seed=1), False),
        ("permute + --reference", lambda m, d: attacks.permute(m, seed=1), True),
        ("prune 30% + permute + --reference",
         edit(lambda m: attacks.permute(attacks.prune(m, 0.3), seed=2)), True),
        (f"fine-tune {ft_epochs} ep (thief data), mask kept", ft(True), False),
        (f"fine-tune {ft_epochs} ep (thief data), dense", ft(False), False),
    ]
    return plan


def verify_row(path: Path, claim_path: Path, reference: Path | None,
               search: bool = False) -> dict[str, Any]:
    claim = load_claim(claim_path)
    start = time.perf_counter()
    v = verify_claim(str(path), claim, VerifyOptions(reference=reference, search=search,
                                                        full_evidence=True))
    e = v.evidence
    return {"verdict": v.status, "flip_rate": e.get("flip_rate"), "log10_p": e.get("log10_p"),
            "decode": e.get("decode"), "agree": e.get("agree"),
            "dark_lost": (e["n_dark"] - e["agree_dark"]) if "n_dark" in e else None,
            "light_lost": (e["n_light"] - e["agree_light"]) if "n_light" in e else None,
            "log10_p_position": e.get("log10_p_position"),
            "data_agree": e.get("search_null", {}).get("claimed_agreement"),
            "random_best": e.get("search_null", {}).get("random_best_mean"),
            "seconds": time.perf_counter() - start}


def attack_step(signed: Ticket, claim_path: Path, out: Path, ft_epochs: int,
                res: dict[str, Any]) -> list[dict[str, Any]]:
    data = load_dataset(signed.dataset)
    sus_dir = out / "suspects"
    sus_dir.mkdir(exist_ok=True)
    rows = []
    base = signed.build()
    for i, (name, fn, use_ref) in enumerate(attack_plan(signed, ft_epochs)):
        path = sus_dir / f"attack_{i:02d}.safetensors"
        acc_path = path.with_suffix(".acc.json")
        if not (path.exists() and acc_path.exists()):
            model = fn(base, data)
            acc_path.write_text(json.dumps({"acc": evaluate(model, data.test)[0]}))
            save_ticket(path, signed.with_model(model))
        acc = json.loads(acc_path.read_text())["acc"]
        row = {"attack": name, "acc": acc,
               **verify_row(path, claim_path, out / "signed.safetensors" if use_ref else None)}
        row["search_verdict"] = verify_row(path, claim_path, out / "signed.safetensors"
                                           if use_ref else None, search=True)["verdict"]
        log(f"{name}: {row}")
        rows.append(row)
        write(out, res | {"attacks": rows})
    return rows


def shuffled_mask(mask: Mask, seed: int) -> Mask:
    """Random mask with exactly the same per-layer counts."""
    gen = torch.Generator().manual_seed(seed)
    return Mask({n: m.flatten()[torch.randperm(m.numel(), generator=gen)].view(m.shape)
                 for n, m in mask.items()})


def false_claim_step(args: argparse.Namespace, signed: Ticket, claim_path: Path, out: Path
                     ) -> dict[str, Any]:
    original = load_ticket(args.ticket)
    fc_dir = out / "unsigned"
    fc_dir.mkdir(exist_ok=True)
    suspects: list[tuple[str, Path]] = []
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.ticket).parent
    for p in sorted(run_dir.glob("round_*/ticket.safetensors")):
        suspects.append((f"IMP {p.parent.name} (unsigned)", p))
    suspects.append(("original ticket (unsigned)", Path(args.ticket)))
    for i in range(args.false_claims):
        path = fc_dir / f"random_{i:03d}.safetensors"
        if not path.exists():
            # Dense rewind weights under the random mask: the trained weights would be
            # zero off the original's own support and leak its structure into the suspect.
            mask = shuffled_mask(signed.mask, 1000 + i)
            model = build_model(original.model_name, original.in_channels,
                                original.num_classes, original.image_size)
            load_state(model, original.rewind or original.state)
            mask.apply(model)
            save_ticket(path, original.with_model(model, mask))
        suspects.append((f"random mask {i}", path))
    rows = []
    for name, path in suspects:
        a = verify_row(path, claim_path, None)
        s = verify_row(path, claim_path, None, search=True)
        rows.append({"suspect": name, "verdict": a["verdict"], "log10_p": a["log10_p"],
                     "decode": a["decode"], "search_verdict": s["verdict"],
                     "search_log10_p": s["log10_p"], "search_decode": s["decode"]})
    owned = sum(r["verdict"] == "OWNED" or r["search_verdict"] == "OWNED" for r in rows)
    return {"n": len(rows), "owned": owned,
            "min_log10_p_claimed": min(r["log10_p"] for r in rows),
            "min_log10_p_search": min(r["search_log10_p"] for r in rows),
            "decoded": sum(r["decode"] != "failed" or r["search_decode"] != "failed"
                           for r in rows),
            "rows": rows[: len(suspects) - args.false_claims]}


def calibration_step(args: argparse.Namespace, signed: Ticket, n_draws: int
                     ) -> dict[str, Any]:
    """Random codes at random positions of unmarked tickets: is P(p <= alpha) <= alpha?"""
    rng = np.random.default_rng(0)
    tickets = {"original": load_ticket(args.ticket).mask,
               "random mask": shuffled_mask(signed.mask, 7)}
    out: dict[str, Any] = {}
    for label, mask in tickets.items():
        conns = {k: v.numpy() for k, v in layer_connectivity(mask).items()
                 if placement.fits(tuple(mask[k].shape), 21) and mask[k].shape[2] > 1}
        names = sorted(conns)
        ps = {"binomial": [], "rowcol": [], "verdict": []}
        for _ in range(n_draws):
            code = qr.make_code("".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
                                                   qr.TAG_CHARS))).modules
            name = names[rng.integers(len(names))]
            c = conns[name]
            r = int(rng.integers(c.shape[0] - 20))
            col = int(rng.integers(c.shape[1] - 20))
            pv = stats.p_values(c, placement.oriented(code, int(rng.integers(4))), r, col)
            ps["binomial"].append(pv.log10_binomial)
            ps["rowcol"].append(pv.log10_rowcol)
            ps["verdict"].append(pv.log10_p)
        out[label] = {k: {f"P(p<={a})": float(np.mean(np.array(v) <= math.log10(a)))
                          for a in (0.001, 0.01, 0.05, 0.1, 0.5)} | {"min_log10_p": min(v)}
                      for k, v in ps.items()}
    return out


def write(out: Path, res: dict[str, Any]) -> None:
    """Results so far (every step adds to them, so a cut-short run still reports)."""
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text(markdown(res))


def markdown(res: dict[str, Any]) -> str:
    lines = ["## Embedding", "", "```", json.dumps(res["embed"], indent=1), "```", ""]
    if res.get("control"):
        lines += ["control (unsigned mask retrained, same recipe): "
                  f"{json.dumps(res['control'])}", ""]
    lines += ["## Attacks", "",
              "| attack | test acc % | flip rate | dark lost | light lost | log10 p at "
              "position | data modules (random codes searched) | log10 p | decode | verdict "
              "| --search |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res.get("attacks", []):
        fr = "-" if r["flip_rate"] is None else f"{r['flip_rate']:.3f}"
        lp = "-" if r["log10_p"] is None else f"{r['log10_p']:.1f}"
        lpp = "-" if r.get("log10_p_position") is None else f"{r['log10_p_position']:.1f}"
        data = ("-" if r.get("data_agree") is None
                else f"{r['data_agree']} ({r['random_best']:.0f})")
        lines.append(f"| {r['attack']} | {r['acc']:.2f} | {fr} | {r['dark_lost']} | "
                     f"{r['light_lost']} | {lpp} | {data} | {lp} | {r['decode']} | "
                     f"{r['verdict']} | {r['search_verdict']} |")
    fc = res.get("false_claims")
    if fc is None:
        return "\n".join(lines) + "\n"
    lines += ["", "## False claims", "",
              f"{fc['n']} unsigned tickets, OWNED: {fc['owned']}, decoded: {fc['decoded']}, "
              f"smallest log10 p at the claimed position {fc['min_log10_p_claimed']:.2f}, "
              f"under --search (corrected) {fc['min_log10_p_search']:.2f}", ""]
    for r in fc["rows"]:
        lines.append(f"- {r['suspect']}: {r['verdict']} (log10 p {r['log10_p']:.2f}), "
                     f"search {r['search_verdict']} (log10 p {r['search_log10_p']:.2f})")
    lines += ["", "## Calibration on unmarked tickets", "", "```",
              json.dumps(res.get("calibration"), indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticket", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--message", default="ACME vision team")
    ap.add_argument("--min-entries", type=int, default=4)
    ap.add_argument("--floor-quantile", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=None, help="override retraining epochs")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--false-claims", type=int, default=100)
    ap.add_argument("--calibration-draws", type=int, default=300)
    ap.add_argument("--control", action="store_true")
    ap.add_argument("--run-dir", default=None, help="IMP run whose round_* tickets serve as "
                                                    "unsigned suspects (default: the ticket's "
                                                    "folder)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    log("embedding")
    signed, claim_path, summary = embed_step(args, out)
    log(f"embedded: {summary}")
    res: dict[str, Any] = {"embed": summary}
    log("attacks")
    res["attacks"] = attack_step(signed, claim_path, out, args.finetune_epochs, res)
    log("calibration")
    res["calibration"] = calibration_step(args, signed, args.calibration_draws)
    log("false claims")
    res["false_claims"] = false_claim_step(args, signed, claim_path, out)
    log(f"false claims: owned {res['false_claims']['owned']}")
    write(out, res)
    if args.control:
        log("control retraining")
        res["control"] = control_step(args, out)
        write(out, res)
    print(markdown(res))


if __name__ == "__main__":
    main()
