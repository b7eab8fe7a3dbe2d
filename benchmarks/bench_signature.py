"""Signature scheme timing: embed placement and full-search verification, against a loop.

    OMP_NUM_THREADS=2 python benchmarks/bench_signature.py [--loop-fraction 1.0]

For resnet20s and resnet18-sized weights (random masks at 80% sparsity, CIFAR shapes):

* ``embed``: choosing layer/offset/orientation/mask pattern (8 codes x 4 orientations,
  FFT correlation per layer) and redrawing the block with exact counts; no retraining.
* ``verify --search``: the whole public ``verify_claim`` call from the file on disk (load,
  kernel norms, thresholding, search of every layer/offset/orientation, exact p-values,
  zxing decode of each layer's best block), timed twice: on the signed copy, where the
  tag decodes and the verdict needs nothing more, and on the unsigned ticket, where it
  also runs the search-calibrated null (16 random codes searched over the suspect in the
  same way).
* the search null alone, against the loop's time scaled to its 128 codes (16 tags x 8 mask
  patterns; extrapolated from the one-code loop, since running it would take hours).
* baseline: the same search written straightforwardly, a Python loop over layers,
  orientations and offsets computing each window's agreement with numpy. With
  ``--loop-fraction f < 1`` the loop visits the first f of each layer's rows of offsets
  and its time is scaled by 1/f (stated in the output).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ticketmark.io import Ticket, save_ticket
from ticketmark.io.ticket import state_of
from ticketmark.models import build_model
from ticketmark.ownership.claims import make_claim
from ticketmark.ownership.keys import public_key_b64
from ticketmark.ownership.signature import placement, qr, verify_claim
from ticketmark.ownership.signature.embed import draw, layer_connectivity, plan
from ticketmark.ownership.signature.search_null import search_null
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.sparsity import Mask, random_prune


def random_ticket(model_name: str, sparsity: float) -> Ticket:
    torch.manual_seed(0)
    model = build_model(model_name, 3, 10, 32)
    rewind = {k: v.clone() for k, v in state_of(model).items()}
    mask = random_prune(Mask.ones(model), sparsity, seed=0, scope="layer")
    mask.apply(model)
    return Ticket(model_name, "cifar10", 3, 10, 32, state_of(model), mask, rewind,
                  {"train": {}})


def signed_copy(ticket: Ticket, name: str, layer_mask: torch.Tensor) -> Ticket:
    """The ticket with the drawn block in layer ``name`` (weights from the rewind point)."""
    mask = Mask({**ticket.mask, name: layer_mask})
    state = dict(ticket.state)
    state[name] = torch.where(layer_mask, ticket.rewind[name], torch.zeros(()))
    return Ticket(ticket.model_name, ticket.dataset, ticket.in_channels, ticket.num_classes,
                  ticket.image_size, state, mask, ticket.rewind, ticket.meta)


def time_verify(path: Path, claim: Any) -> tuple[float, Any]:
    """Best of three ``verify --search`` calls, after a warm-up (imports, caches)."""
    verify_claim(str(path), claim, VerifyOptions(search=True))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        v = verify_claim(str(path), claim, VerifyOptions(search=True))
        times.append(time.perf_counter() - start)
    return min(times), v


def loop_search(conns: dict[str, np.ndarray], code: np.ndarray, fraction: float
                ) -> tuple[float, int, int]:
    """The straightforward search; returns (seconds scaled to all offsets, best, windows)."""
    n = code.shape[0]
    best, windows = -1, 0
    start = time.perf_counter()
    for conn in conns.values():
        rows, cols = conn.shape[0] - n + 1, conn.shape[1] - n + 1
        if rows <= 0 or cols <= 0:
            continue
        for k in range(4):
            drawn = np.rot90(code, k)
            for r in range(max(1, int(round(rows * fraction)))):
                for c in range(cols):
                    agree = int(np.sum(conn[r:r + n, c:c + n] == drawn))
                    windows += 1
                    best = max(best, agree)
    return (time.perf_counter() - start) / fraction, best, windows


def bench(model_name: str, fraction: float, tmp: Path) -> dict[str, float | int | str]:
    ticket = random_ticket(model_name, 0.8)
    key = Ed25519PrivateKey.generate()
    tag = qr.make_tag(public_key_b64(key), "bench", ticket.fingerprint())
    codes = qr.all_masks(tag)
    start = time.perf_counter()
    p = plan(ticket.mask, codes, min_entries=4)
    name = p.position.layer
    new_layer, _ = draw(ticket.mask[name], ticket.rewind[name], ticket.state[name],
                        placement.oriented(p.code.modules, p.position.orientation),
                        p.position.row, p.position.col, 4)
    embed_s = time.perf_counter() - start

    conns = layer_connectivity(ticket.mask)
    params = {"tag": tag, "tag_fingerprint": ticket.fingerprint(), "qr_version": 1,
              "qr_mask": p.code.mask, "qr_error": "H", "size": p.code.size, "layer": name,
              "row": p.position.row, "col": p.position.col,
              "orientation": p.position.orientation,
              "density": float(conns[name].float().mean()),
              "densities": {k: float(v.float().mean()) for k, v in conns.items()}}
    claim = make_claim(key, "signature", ticket.fingerprint(), params, "bench")
    signed = signed_copy(ticket, name, new_layer)
    signed_s, v = time_verify(save_ticket(tmp / f"{model_name}_signed", signed), claim)
    assert v.status == "OWNED" and v.evidence["tag_decoded"], v.reason
    unsigned_s, v = time_verify(save_ticket(tmp / model_name, ticket), claim)
    assert "random_best_max" in v.evidence["search_null"], "the null did not run"
    positions = int(v.evidence["search"]["positions_tested"])

    np_conns = {k: c.numpy() for k, c in conns.items()}
    start = time.perf_counter()
    fast = placement.best_per_layer(conns, [p.code.modules])
    search_s = time.perf_counter() - start
    loop_s, loop_best, windows = loop_search(np_conns, p.code.modules, fraction)
    if fraction >= 1.0:
        assert loop_best == fast[0].agreement, "loop and FFT search disagree"
    weights = {k: v for k, v in ticket.state.items() if k in conns}
    start = time.perf_counter()
    null = search_null(weights, params["densities"], 1, len(tag))
    null_s = time.perf_counter() - start
    # The null searches 16 tags x 8 mask patterns = 128 codes over the same windows as the
    # claim's one code: the loop would take 128 times as long (extrapolated, not run).
    null_codes = len(null.maxima) * len(codes)
    return {"model": model_name, "positions": positions, "embed_s": embed_s,
            "search_s": search_s, "verify_signed_s": signed_s,
            "verify_unsigned_s": unsigned_s, "loop_s": loop_s,
            "loop_windows_run": windows, "speedup_search": loop_s / search_s,
            "speedup_verify": loop_s / signed_s, "null_s": null_s,
            "null_loop_s": loop_s * null_codes, "speedup_null": loop_s * null_codes / null_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop-fraction", type=float, default=1.0)
    ap.add_argument("--models", default="resnet20s,resnet18")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, loop fraction: {args.loop_fraction}")
    rows = []
    with TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(bench(name, args.loop_fraction, Path(tmp)))
            print(rows[-1], flush=True)
    print("\n| model | positions searched | embed (no retrain) s | FFT search s | "
          "Python loop s | loop / search | search null s | null loop s (x128, extrapolated) "
          "| loop / null | verify --search, signed (tag decodes) s | loop / that "
          "| verify --search, unsigned (null runs) s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['positions']:,} | {r['embed_s']:.2f} | {r['search_s']:.3f} "
              f"| {r['loop_s']:.1f} | {r['speedup_search']:.0f}x | {r['null_s']:.2f} | "
              f"{r['null_loop_s']:.0f} | {r['speedup_null']:.0f}x | "
              f"{r['verify_signed_s']:.2f} | {r['speedup_verify']:.0f}x | "
              f"{r['verify_unsigned_s']:.2f} |")


if __name__ == "__main__":
    main()
