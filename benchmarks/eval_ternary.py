"""Ternary tickets, both directions: the owner's QAT (``ternarize``) vs the thief's rounding.

For each model: find an 80%-sparse ticket (OMP), sign it (QR + hidden bits), embed a
trigger set, then

* owner: ``ternarize`` with the trigger set kept (and once without it, the baseline that
  shows why it is kept);
* thief: ``attack quantize --scheme ternary`` (one-shot TWN rounding + BatchNorm
  recalibration on the thief's data);

and verify the signature claim (made by ``embed`` before ternarisation, with its reveal)
and the trigger claim on each. Prints one Markdown table: test accuracy, bytes on disk,
verdicts with p-values. Every step is the CLI, as a user runs it.

    OMP_NUM_THREADS=1 python benchmarks/eval_ternary.py --work /tmp/tern --dataset mnist5k
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def cli(*args: str, cwd: Path, check: bool = True) -> str:
    res = subprocess.run([sys.executable, "-m", "ticketmark", *args], cwd=cwd, text=True,
                         capture_output=True)
    if check and res.returncode != 0:
        raise SystemExit(f"ticketmark {' '.join(args)} failed:\n{res.stderr}{res.stdout}")
    return res.stdout + res.stderr


def verdict(out: str) -> str:
    """'OWNED (p 3e-58)' from verify's first line."""
    first = out.strip().splitlines()[0]
    word = "NOT OWNED" if "NOT OWNED" in first else "OWNED" if "OWNED" in first else first
    p = re.search(r"p = ([0-9.e+-]+)", first)
    m = re.search(r"(\d+)/100 triggers match", first)
    extra = f"{m.group(1)}/100, " if m else ""
    return f"{word} ({extra}p {p.group(1)})" if p else word


def size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def acc(ticket_json: Path) -> float:
    return float(json.loads(ticket_json.read_text())["metrics"][-1]["test_acc"])


def run_model(model: str, args: argparse.Namespace) -> list[dict[str, str]]:
    work = Path(args.work) / model
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cli("find", "--method", "omp", "--model", model, "--dataset", args.dataset,
        "--sparsity", str(args.sparsity), "--epochs", str(args.epochs), "--rewind-epoch", "1",
        "--out", "run", "-q", cwd=work)
    if not (work / "owner.pem").exists():
        cli("keygen", "--out", "owner", cwd=work)
    if not (work / "signed.safetensors").exists():
        cli("embed", "--ticket", "run", "--key", "owner.pem", "--message", "ACME", "--out",
            "signed.safetensors", "--claim", "sig.claim.json", "-q", cwd=work)
    if not (work / "release.safetensors").exists():
        cli("trigger", "embed", "--ticket", "signed.safetensors", "--key", "owner.pem",
            "--out", "release", "--claim-out", "trig.claim.json", "--reveal-out",
            "trig.reveal.json", "-q", cwd=work)
    prep = time.perf_counter() - t0
    qat = ["--epochs", str(args.qat_epochs), "-q", "--force"]
    timings = {}
    t = time.perf_counter()
    print(cli("ternarize", "--ticket", "release", "--out", "owner_t3", *qat, "--trigger-claim",
              "trig.claim.json", "--trigger-reveal", "trig.reveal.json", cwd=work))
    timings["owner_t3"] = time.perf_counter() - t
    t = time.perf_counter()
    print(cli("ternarize", "--ticket", "release", "--out", "owner_t3_clean", *qat, cwd=work))
    timings["owner_t3_clean"] = time.perf_counter() - t
    print(cli("attack", "quantize", "--in", "release", "--out", "thief_t3", "--scheme",
              "ternary", "-q", "--force", cwd=work))
    rows = []
    float_bytes = size(work / "release.safetensors", work / "release.json")
    for name, what in (("release", "float release (signed + trigger)"),
                       ("owner_t3", "owner: ternarize, trigger kept"),
                       ("owner_t3_clean", "owner: ternarize, clean data only"),
                       ("thief_t3", "thief: attack quantize ternary")):
        sig = verdict(cli("verify", "--suspect", f"{name}.safetensors", "--claim",
                          "sig.claim.json", "--reveal", "signed.signature.reveal.json",
                          cwd=work, check=False))
        trig = verdict(cli("verify", "--suspect", f"{name}.safetensors", "--claim",
                           "trig.claim.json", "--reveal", "trig.reveal.json", cwd=work,
                           check=False))
        tern = work / f"{name}.tern"
        test = acc(work / f"{name}.json")
        rows.append({"model": model, "ticket": what, "test acc %": f"{test:.2f}",
                     "bytes": f"{float_bytes:,}" if name == "release" else
                     (f"{size(tern):,} (.tern)" if tern.is_file() else "float"),
                     "signature": sig, "trigger": trig,
                     "time s": f"{timings[name]:.0f}" if name in timings else
                     (f"{prep:.0f} (find+embed+trigger)" if name == "release" else "")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", nargs="+", default=["conv4", "resnet20s"])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--qat-epochs", type=int, default=3)
    args = ap.parse_args()
    rows = [r for m in args.models for r in run_model(m, args)]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(r[k] for k in keys) + " |")


if __name__ == "__main__":
    main()
