"""Turn the demo's summary into ``report.json``, the input of ``ticketmark report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ticketmark.io import atomic_write_json


def _rel(out: Path, path: Path) -> str:
    return str(path.relative_to(out))


def _copies_to_show(out: Path, summary: dict[str, Any], p_key: str) -> list[tuple[str, Path]]:
    """The stolen copies whose pictures the report shows, each named as in the table: the
    copy as released, and the one with the largest ``p_key`` (where the evidence thins)."""
    from ticketmark.demo.story import DemoSettings, attack_plan, stolen_name

    folders = {(label, strength): out / "verify" / stolen_name(kind, strength)
               for label, strength, kind, _ in attack_plan(DemoSettings(**summary["settings"]))}
    rows = [r for r in summary["robustness"] if (r["attack"], r["strength"]) in folders]
    if not rows:
        return []
    picked = [rows[0]]
    worst = max(rows, key=lambda r: r[p_key] if r[p_key] is not None else 0.0)
    if worst is not rows[0]:
        picked.append(worst)
    return [(_copy_name(r), folders[(r["attack"], r["strength"])]) for r in picked]


def _copy_name(row: dict[str, Any]) -> str:
    return row["attack"] if row["strength"] == "-" else f"{row['attack']} {row['strength']}"


def write_report_json(out: Path, summary: dict[str, Any]) -> Path:
    s = summary["settings"]
    rounds = json.loads((out / "find" / "summary.json").read_text())["rounds"]
    rows = summary["robustness"]
    owned_sig = sum(r["signature"] == "OWNED" for r in rows)
    owned_trig = sum(r["trigger"] == "OWNED" for r in rows)
    forged_ok = all(f["outcome"].startswith("rejected") for f in summary["forgeries"])
    verdict = (f"Signature verified the owner on {owned_sig}/{len(rows)} stolen copies, the "
               f"trigger set on {owned_trig}/{len(rows)}; "
               f"{'every' if forged_ok else 'NOT every'} forged claim was rejected.")
    sig, owner = summary["owner"]["signature"], summary["owner"]
    sig_copies = _copies_to_show(out, summary, "signature p")
    trig_copies = _copies_to_show(out, summary, "trigger p")
    robustness_notes = [
        "Thresholds: a signature claim holds when its tag decodes or p < 1e-9, a "
        "trigger claim when p < 1e-6 (docs/verdicts.md says why they differ).",
        "Reading very small p-values: a p-value such as 1e-100 is the tail of an "
        "idealised chance model (independent modules or answers), computed exactly in "
        "log space; real masks and models are not that independent, so read it as "
        "'far beyond chance', compare it with the threshold, and do not read "
        "the exponent literally or rank copies by it.",
        "Lock column: how much of the owner's lock key is present in the copy. The "
        "key is the set of weights the owner cut out of the release; a key weight "
        "counts as present when the copy's weight at that position keeps at least "
        "half of its original value with the same sign. 'locked (0% of key present)' "
        "is the expected state of every stolen copy: the thief never had the key. A "
        "few percent can appear by chance when an attack moves weights or lets pruned "
        "ones grow back (channel permutation puts other channels' weights at the key's "
        "positions; dense fine-tuning regrows pruned weights): that is not the key, and "
        "below 50% the copy counts as locked.",
    ]
    sections = [
        # The answers first, right under the summary; how they were reached follows.
        {"title": "1. Robustness: the thief's attacks and the verdicts",
         "text": "Each row is one stolen copy. Signature: white-box, with the owner's "
                 "reference ticket to undo channel permutations; signature p = the chance "
                 "that a model carrying no mark reproduces that many QR modules (the larger "
                 "of two exact chance models; when the tag does not decode, at least the "
                 "chance that searching the copy finds that much for a QR nobody embedded). "
                 "Trigger: black-box through an HTTP endpoint on 127.0.0.1; trigger p = "
                 "twice the smaller of two exact tests on its answers (the top-1 match test "
                 "against 1/classes per keyed mark, and the rank test of the keyed label in "
                 "the copy's scores: Bonferroni). docs/verdicts.md explains both.",
         "table": rows,
         "notes": robustness_notes},
        {"title": "2. False claims and forgeries",
         "table": summary["forgeries"]},
        {"title": "3. The ticket",
         "text": (f"IMP with rewinding to epoch {s['rewind_epoch']} on {s['model']} / "
                  f"{s['dataset']}: {s['rounds']} rounds at rate {s['rate']}, {s['epochs']} "
                  f"epochs each. Final sparsity {100 * summary['ticket']['sparsity']:.1f}%, "
                  f"test accuracy {summary['ticket']['test_acc']:.2f}%."),
         "table": [{"round": r["round"], "sparsity %": 100 * r["sparsity"],
                    "test accuracy %": r["test_acc"]} for r in rounds],
         "images": [{"path": "find/accuracy_vs_sparsity.png",
                     "caption": "test accuracy vs sparsity across IMP rounds"},
                    {"path": "find/layer_density.png", "caption": "per-layer density"}]},
        {"title": "4. Credentials embedded by the owner",
         "text": (f"QR code version {sig['qr_version']} (tag {sig['tag']}) drawn into the "
                  f"channel connectivity of {sig['layer']} at row {sig['row']}, column "
                  f"{sig['col']}, orientation {sig['orientation']}; {sig['modules_changed']} of "
                  f"{sig['modules']} modules had to change. A trigger set of "
                  f"{s['trigger_size']} images derived from the owner's key was trained in at "
                  f"the same time. Test accuracy {summary['ticket']['test_acc']:.2f}% -> "
                  f"{owner['test_acc']:.2f}%, trigger accuracy {owner['trigger_acc']:.1f}%. "
                  f"The release copy is locked: {summary['lock']['key_weights']} weights cut "
                  f"by ewp paths and kept in the owner's key, as many random connections "
                  f"added back; its as-is accuracy is "
                  f"{summary['lock']['locked_as_is_acc']:.2f}%."),
         "images": [{"path": _rel(out, folder / "signature.png"),
                     "caption": f"Copy '{name}': connectivity of the signed layer "
                                f"{sig['layer']} in this copy (dark = connected, the QR block "
                                "outlined in red), the QR read from this copy (modules that "
                                "differ marked with a red x) and the QR the claim expects."}
                    for name, folder in sig_copies if (folder / "signature.png").is_file()]},
        {"title": "5. The trigger set's answers, up close",
         "images": [img for name, folder in trig_copies for img in (
             [{"path": _rel(out, folder / "trigger_confusion.png"),
               "caption": f"Copy '{name}': one square per trigger answer (green: the "
                          "keyed label, red: a miss), then the misses themselves (a→b = "
                          "the set's label → this copy's answer). The p in its title is "
                          "the trigger p of the table above."}]
             if (folder / "trigger_confusion.png").is_file() else [])]},
    ]
    sections = [sec for sec in sections if sec.get("table") or sec.get("images")
                or sec.get("text")]
    report = {"title": "ticketmark demo: a ticket claims its ownership", "verdict": verdict,
              "sections": sections}
    path = out / "report.json"
    atomic_write_json(path, report, sort_keys=False)  # column order is reading order
    return path
