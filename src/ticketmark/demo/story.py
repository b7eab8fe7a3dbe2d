"""``ticketmark demo``: the owner's and the thief's story, step by step, on embedded data.

Every step goes through the same Python API the CLI uses, and writes its files under the
output folder, so a reader can re-run any step by hand. The last step writes
``report.json`` and renders it into ``report.html``/``report.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from ticketmark.data import load_dataset
from ticketmark.demo.evidence import lock_status, verify_both
from ticketmark.demo.forgeries import run_forgeries
from ticketmark.finding import FindConfig, run_imp
from ticketmark.io import atomic_write_json, save_ticket
from ticketmark.ownership.claims import make_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.lock.choosers import ChooserContext, choose
from ticketmark.ownership.lock.keyfile import write_key
from ticketmark.ownership.lock.locking import lock_ticket
from ticketmark.ownership.reference import bind
from ticketmark.ownership.signature import EmbedOptions, embed_signature
from ticketmark.ownership.signature.hidden import save_reveal as save_signature_reveal
from ticketmark.ownership.trigger.commitment import save_reveal
from ticketmark.ownership.trigger.embed import (
    EmbedConfig,
    mixed_splits,
    prepare_set,
    trigger_accuracy,
)
from ticketmark.report.page import render_report
from ticketmark.training import TrainConfig, evaluate
from ticketmark.training.progress import console

MESSAGE = "ticketmark demo owner"


@dataclass
class DemoSettings:
    dataset: str
    model: str
    rounds: int
    rate: float
    epochs: int
    rewind_epoch: int
    batch_size: int
    finetune_epochs: int
    lock_paths: int
    embed_epochs: int
    trigger_size: int = 100

    @classmethod
    def for_mode(cls, fast: bool) -> DemoSettings:
        if fast:
            return cls("digits", "resnet20s", rounds=2, rate=0.5, epochs=4, rewind_epoch=1,
                       batch_size=64, finetune_epochs=2, lock_paths=40, embed_epochs=8)
        return cls("mnist5k", "resnet20s", rounds=3, rate=0.45, epochs=5, rewind_epoch=1,
                   batch_size=128, finetune_epochs=3, lock_paths=40, embed_epochs=6)


def attack_plan(s: DemoSettings) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(row label, strength, attack kind, params) for the thief's sweep."""
    return [
        ("stolen as released", "-", "none", {}),
        ("fine-tune (thief data)", f"{s.finetune_epochs} ep", "finetune",
         {"epochs": s.finetune_epochs, "thief_fraction": 0.5}),
        ("prune", "30%", "prune", {"ratio": 0.3}),
        ("prune", "50%", "prune", {"ratio": 0.5}),
        ("prune", "70%", "prune", {"ratio": 0.7}),
        ("quantize", "int8", "quantize", {"scheme": "int8"}),
        ("quantize", "ternary", "quantize", {"scheme": "ternary"}),
        ("fill pruned weights", "1%", "fill", {"scale": 0.01}),
        ("permute channels", "all layers", "permute", {"seed": 1}),
    ]


def stolen_name(kind: str, strength: str) -> str:
    """File stem of a stolen copy (also the name of its folder under ``verify/``)."""
    return f"{kind}_{strength}".replace("%", "pct").replace(" ", "_")


def _step(n: int, total: int, title: str) -> None:
    console.rule(f"[bold]{n}/{total}  {title}")


def run_demo(out: str | Path, fast: bool = False, progress: bool = True) -> dict[str, Any]:
    from ticketmark.attacks import apply_attack

    t0 = time.perf_counter()
    out = Path(out)
    s = DemoSettings.for_mode(fast)
    total = 8
    data = load_dataset(s.dataset)

    _step(1, total, f"Find a winning ticket: IMP on {s.model}/{s.dataset}")
    cfg = FindConfig(model=s.model, dataset=s.dataset, rounds=s.rounds, rate=s.rate,
                     rewind_epoch=s.rewind_epoch,
                     train=TrainConfig(epochs=s.epochs, batch_size=s.batch_size))
    plain = run_imp(cfg, out / "find", progress=progress)
    plain_acc = plain.meta["metrics"][-1]["test_acc"]
    console.print(f"ticket: {100 * plain.mask.sparsity():.1f}% sparse, test accuracy "
                  f"{plain_acc:.2f}%")

    _step(2, total, "The owner's identity: an Ed25519 key pair")
    priv_path, pub_path = keygen(out / "owner" / "owner", force=True)  # a fresh demo owner
    key = load_private_key(priv_path)
    console.print(f"{priv_path}, {pub_path}")

    _step(3, total, "Embed credentials: QR signature in the topology + trigger set")
    prepared = prepare_set(key, plain, data, EmbedConfig(size=s.trigger_size))
    trig = prepared.trigger
    mixed, _ = mixed_splits(data, prepared.train_x, prepared.train_y, 0.2)
    options = EmbedOptions(epochs=s.embed_epochs, progress=progress)
    embedded = embed_signature(plain, key, MESSAGE, options, data=mixed)
    owner = embedded.ticket
    owner_path = save_ticket(out / "owner" / "ticket", owner)
    sig_claim_path = save_claim(out / "owner" / "signature.claim.json", embedded.claim)
    if embedded.reveal is not None:  # opens the hidden bits; read by demo.evidence
        save_signature_reveal(out / "owner" / "signature.reveal.json", embedded.reveal)
    trig_claim = make_claim(key, "trigger", owner.fingerprint(),
                            bind(prepared.claim_params(), owner), MESSAGE)
    trig_claim_path = save_claim(out / "owner" / "trigger.claim.json", trig_claim)
    seed_path = save_reveal(out / "owner" / "trigger.reveal.json", prepared.reveal)
    owner_model = owner.build()
    owner_acc, _ = evaluate(owner_model, data.test)
    owner_trig = trigger_accuracy(owner_model, trig)
    sig = embedded.summary
    console.print(f"QR v{sig['qr_version']} in {sig['layer']} at ({sig['row']}, {sig['col']}); "
                  f"test accuracy {plain_acc:.2f}% -> {owner_acc:.2f}%; trigger accuracy "
                  f"{owner_trig:.1f}%")

    _step(4, total, "Lock a release copy (ewp key, random add-back)")
    ctx = ChooserContext(owner, data=data)
    selection = choose(ctx, "ewp", paths=s.lock_paths).take()
    locked, lock_key = lock_ticket(owner, selection, add_back=True,
                                   params={"method": "ewp", "paths": s.lock_paths})
    key_path = write_key(out / "owner" / "owner.lock", lock_key)
    release_path = save_ticket(out / "release" / "ticket", locked)
    locked_acc, _ = evaluate(locked.build(), data.test)
    console.print(f"key: {lock_key.removed_count()} weights ({key_path}); released ticket "
                  f"{release_path} (as-is accuracy {locked_acc:.2f}%)")

    _step(5, total, "The thief steals the released ticket and attacks it")
    stolen: list[tuple[str, str, Path, float]] = []
    for label, strength, kind, params in attack_plan(s):
        path = out / "stolen" / f"{stolen_name(kind, strength)}.safetensors"
        if kind == "none":
            ticket = locked
        else:
            ticket = apply_attack(locked, kind, params, data, progress=False)
        save_ticket(path, ticket)
        acc, _ = evaluate(ticket.build(), data.test)
        stolen.append((label, strength, path, acc))
        console.print(f"  {label:<24} {strength:<10} accuracy {acc:6.2f}%")

    _step(6, total, "Verify every stolen copy: white-box signature, black-box trigger set")
    rows = []
    for label, strength, path, acc in stolen:
        sig_v, trig_v = verify_both(path, sig_claim_path, trig_claim_path, owner_path,
                                    seed_path, out / "verify" / path.stem)
        rows.append({"attack": label, "strength": strength, "accuracy": acc,
                     "signature": sig_v.status, "signature p": sig_v.p_value,
                     "bits": f"{sig_v.evidence.get('agree')}/{_modules(sig_v.evidence)}",
                     "decode": sig_v.evidence.get("decode"),
                     "trigger": trig_v.status, "trigger p": trig_v.p_value,
                     "triggers matched": f"{trig_v.evidence.get('matches')}/"
                                         f"{trig_v.evidence.get('queried')}",
                     "lock": lock_status(path, lock_key)})

    _step(7, total, "Forged claims and disputes")
    # A black-box trigger dispute is held over the copy the thief would deploy: the locked
    # release is of little use as it is, the fine-tuned one is (and there the owner's
    # triggers hold again). The white-box forgeries work on the release itself.
    deployed = next(path for (label, _, path, _) in stolen if label.startswith("fine-tune"))
    forgeries = run_forgeries(out, data, owner_path, sig_claim_path, trig_claim_path, seed_path,
                              stolen[0][2], deployed, plain, progress)

    _step(8, total, "Report")
    summary = {
        "settings": asdict(s), "ticket": {"sparsity": plain.mask.sparsity(),
                                          "test_acc": plain_acc, "fingerprint":
                                          plain.fingerprint()},
        "owner": {"test_acc": owner_acc, "trigger_acc": owner_trig, "signature": sig},
        "lock": {"key_weights": lock_key.removed_count(), "locked_as_is_acc": locked_acc},
        "robustness": rows, "forgeries": forgeries,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out / "summary.json", summary, sort_keys=False)
    from ticketmark.demo.report import write_report_json

    write_report_json(out, summary)
    html_path, _ = render_report(out)
    _print_table(rows, forgeries)
    console.print(f"report: {html_path}   ({summary['seconds']:.0f} s; full reasons in "
                  f"{out / 'report.md'})")
    return summary


def _print_table(rows: list[dict[str, Any]], forgeries: list[dict[str, Any]]) -> None:
    table = Table(title="Verdicts on the stolen copies")
    for col in ("attack", "strength", "accuracy", "signature", "signature p", "trigger",
                "trigger p", "lock"):
        # A p-value is never cut or folded: "3.2e-10" above "6" reads as 3.2e-10, not
        # 3.2e-106. In a narrow terminal the other columns give way instead.
        if col.endswith(" p"):
            table.add_column(col, no_wrap=True, min_width=8)
        else:
            table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["attack"], r["strength"], f"{r['accuracy']:.2f}", r["signature"],
                      _p(r["signature p"]), r["trigger"], _p(r["trigger p"]),
                      r["lock"].split(" ")[0])
    _print_wide(table)
    forged = Table(title="Forged claims")
    for col in ("forgery", "outcome", "why"):
        forged.add_column(col)
    for f in forgeries:
        why = f["why"] if len(f["why"]) <= 110 else f["why"][:107] + "..."
        forged.add_row(f["forgery"], f["outcome"], why)
    _print_wide(forged)


def _print_wide(table: Table) -> None:
    """Print at the table's natural width when the output is a file or a pipe: nothing
    there is narrower than a line, so nothing needs to wrap (a terminal keeps its width)."""
    from rich.console import Console
    from rich.measure import Measurement

    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    # Console.print never renders wider than its console, so print through a wider one
    Console(file=console.file, width=max(console.width, natural)).print(table)


def _modules(evidence: dict[str, Any]) -> int:
    return int(evidence.get("n_dark", 0)) + int(evidence.get("n_light", 0))


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.1e}"
