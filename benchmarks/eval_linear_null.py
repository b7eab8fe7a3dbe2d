"""The QR signature's null when its modules are single weights of a linear layer.

A code in an MLP (lenet300) or a transformer's projection sits in a linear layer, one weight
per module (``embed.as_kernels``). Is the verifier's null right there? An owner signs one
lenet300 ticket (``--min-entries 1``, QR + hidden bits); the owner's claim and reveal are
then read in N lenet300 tickets found with other seeds (same recipe), at the claimed
position and with ``--search``. Printed: how many read OWNED and the smallest p of each
reading (QR at the position, QR searched, hidden bits).

    OMP_NUM_THREADS=1 python benchmarks/eval_linear_null.py --models 20
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from ticketmark.finding import FindConfig, run_imp
from ticketmark.io import load_ticket, save_ticket
from ticketmark.ownership.claims import save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import hidden
from ticketmark.ownership.signature.embed import EmbedOptions, embed_signature
from ticketmark.ownership.signature.verify import verify_claim
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.training import TrainConfig


def found(out: Path, seed: int, epochs: int):
    if not (out / "ticket.safetensors").exists():
        cfg = FindConfig(model="lenet300", dataset="digits", rounds=2, rate=0.5,
                         rewind_epoch=1, train=TrainConfig(epochs=epochs, batch_size=64,
                                                           seed=seed))
        run_imp(cfg, out, progress=False)
    return load_ticket(out / "ticket.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="eval_linear_null_"))
    t0 = time.time()
    owner = found(work / "owner", 0, args.epochs)
    res = embed_signature(owner, load_private_key(keygen(work / "k", force=True)[0]), "mlp",
                          EmbedOptions(epochs=2, min_entries=1, progress=False))
    signed = save_ticket(work / "signed", res.ticket)
    claim = save_claim(work / "claim.json", res.claim)
    reveal = hidden.save_reveal(work / "reveal.json", res.reveal)
    from ticketmark.ownership.claims import load_claim

    c = load_claim(claim)
    own = verify_claim(str(signed), c, VerifyOptions(reveal=reveal))
    print(f"owner's ticket: {own.status}, {own.evidence['agree']}/441, hidden "
          f"{own.evidence['hidden_bits_agree']}/{own.evidence['hidden_bits_read']}; code in "
          f"{c.params['layer']} {tuple(res.ticket.state[c.params['layer']].shape)}")
    rows = {"QR at the claimed position": [], "QR with --search": [], "hidden bits": []}
    owned = 0
    for i in range(args.models):
        t = found(work / f"indep_{i}", 100 + i, args.epochs)
        path = save_ticket(work / f"indep_{i}_t", t)
        v = verify_claim(str(path), c, VerifyOptions(reveal=reveal))
        s = verify_claim(str(path), c, VerifyOptions(search=True))
        owned += v.owned + s.owned
        rows["QR at the claimed position"].append(v.evidence["log10_p"])
        rows["QR with --search"].append(s.evidence["log10_p"])
        rows["hidden bits"].append(v.evidence["hidden_log10_p"])
    print(f"\n{args.models} lenet300 tickets from other seeds ({time.time() - t0:.0f} s): "
          f"{owned} OWNED verdicts\n\n| reading | smallest p | median p |\n|---|---:|---:|")
    for name, lps in rows.items():
        lps = sorted(lps)
        print(f"| {name} | {10 ** lps[0]:.3g} | {10 ** lps[len(lps) // 2]:.3g} |")
    assert math.isfinite(sum(sum(v) for v in rows.values()))


if __name__ == "__main__":
    main()
