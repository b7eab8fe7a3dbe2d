"""Turn the demo's summary into ``report.json``, the input of ``ticketmark report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ticketmark.io import atomic_write_json


def _rel(out: Path, path: Path) -> str:
    return str(path.relative_to(out))


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
    first = sorted((out / "verify").iterdir())[0] if (out / "verify").is_dir() else None
    stolen_dir = out / "verify" / "none_-"
    stolen_dir = stolen_dir if stolen_dir.is_dir() else first
    sig, owner = summary["owner"]["signature"], summary["owner"]
    sections = [
        {"title": "1. The ticket",
         "text": (f"IMP with rewinding to epoch {s['rewind_epoch']} on {s['model']} / "
                  f"{s['dataset']}: {s['rounds']} rounds at rate {s['rate']}, {s['epochs']} "
                  f"epochs each. Final sparsity {100 * summary['ticket']['sparsity']:.1f}%, "
                  f"test accuracy {summary['ticket']['test_acc']:.2f}%."),
         "table": [{"round": r["round"], "sparsity %": 100 * r["sparsity"],
                    "test accuracy %": r["test_acc"]} for r in rounds],
         "images": [{"path": "find/accuracy_vs_sparsity.png",
                     "caption": "test accuracy vs sparsity across IMP rounds"},
                    {"path": "find/layer_density.png", "caption": "per-layer density"}]},
        {"title": "2. Credentials embedded by the owner",
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
         "images": ([{"path": _rel(out, stolen_dir / "signature.png"),
                      "caption": "connectivity of the signed layer (block outlined), the QR "
                                 "read from the stolen copy, and the expected QR"}]
                    if stolen_dir else [])},
        {"title": "3. Robustness: the thief's attacks and the verdicts",
         "text": "Each row is one stolen copy. Signature: white-box, with the owner's "
                 "reference ticket to undo channel permutations; bits = QR modules that agree; "
                 "p = chance of that agreement. Trigger: black-box through an HTTP endpoint "
                 "on 127.0.0.1; p = one-sided binomial test against 1/classes. Lock: share of "
                 "the owner's key weights present in the copy.",
         "table": rows,
         "images": ([{"path": _rel(out, stolen_dir / "trigger_confusion.png"),
                      "caption": "trigger set: expected vs the stolen copy's answers"}]
                    if stolen_dir else [])},
        {"title": "4. False claims and forgeries",
         "table": summary["forgeries"]},
    ]
    report = {"title": "ticketmark demo: a ticket claims its ownership", "verdict": verdict,
              "sections": sections}
    path = out / "report.json"
    atomic_write_json(path, report, sort_keys=False)  # column order is reading order
    return path
