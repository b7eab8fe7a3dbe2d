"""Signature search: the FFT search against direct conv2d and the paper's window loop.

    python benchmarks/bench_signature.py [--loop-fraction 0.25] [--models resnet20s,resnet18]

For resnet20s- and resnet18-sized weights (random masks at 80% sparsity, CIFAR shapes):

* ``search``: one code over every layer, all offsets and 4 orientations, best block per
  layer (``placement.best_per_layer``: float32 FFT correlation with the +-1 code, two
  orientations per inverse FFT, every value checked to round exactly), what embedding and
  ``verify --search`` run per code.
* baseline ``conv2d``: what a competent engineer writes instead: per layer, one direct
  ``torch.nn.functional.conv2d`` of the connectivity with the code's 4 orientations as
  +-1 kernels (output channels of the one call; agreement = correlation + n^2 - |code|,
  exact in float32). Must find the same best agreement at the same position (first best
  in orientation, row, col order) in every layer.
* anchor ``paper loop``: the paper's own window search (VITA-Group/NO-stealing-LTH,
  ``embed_res18_cifar10.py``, re-implemented from reading it): a Python double loop over
  offsets comparing each window with numpy. It visits the first ``--loop-fraction`` of
  each layer's rows of offsets; its time is scaled by 1/fraction (stated) and its best
  must equal the FFT search's best over the same rows.
* ``search null``: the verifier's calibration (16 random tags x 8 masks x 4 orientations,
  float32 FFT per layer), with its CPU time split into user and system time.
* ``embed`` (placement and redraw, no retraining) and ``verify --search`` calls from disk:
  on the signed copy (the tag decodes) and on the unsigned ticket (the null runs), the
  latter twice: as shipped (the null stops after ``EARLY_CODES`` codes once they reach the
  claim) and, as the baseline, with the whole 64-code null (``--full-evidence``: what every
  verification of an innocent suspect cost before the early stop).

All times are CPU seconds of this process (user + system, ``resource.getrusage``) with one
torch thread, so other processes on a shared machine do not count; ratios are in one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best CPU seconds (user + system) of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        u0, s0 = cpu()
        result = fn()
        u1, s1 = cpu()
        best = min(best, (u1 - u0) + (s1 - s0))
    return best, result


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


def conv2d_search(conns: dict[str, torch.Tensor], code: np.ndarray
                  ) -> dict[str, tuple[int, int, int, int]]:
    """Best (agreement, orientation, row, col) per layer with one direct conv2d per layer
    (the 4 orientations as output channels; first best in (orientation, row, col) order)."""
    n = code.shape[0]
    d = placement.oriented_stack(code).float()  # (4, n, n) in {0, 1}
    kernels = (2 * d - 1).unsqueeze(1)  # (4, 1, n, n) in {-1, 1}
    const = (n * n - d.sum(dim=(1, 2))).view(1, 4, 1, 1)
    best = {}
    for name, conn in conns.items():
        if conn.shape[0] < n or conn.shape[1] < n:
            continue
        agree = (F.conv2d(conn.float()[None, None], kernels) + const)[0]
        flat = int(torch.argmax(agree))
        k, rest = divmod(flat, agree.shape[1] * agree.shape[2])
        r, c = divmod(rest, agree.shape[2])
        best[name] = (int(torch.round(agree[k, r, c])), k, r, c)
    return best


def fft_found(cands: list[placement.Candidate]) -> dict[str, tuple[int, int, int, int]]:
    return {c.position.layer: (c.agreement, c.position.orientation, c.position.row,
                               c.position.col) for c in cands}


def paper_loop(conns: dict[str, np.ndarray], code: np.ndarray, fraction: float
               ) -> tuple[dict[str, int], int]:
    """The paper's window-by-window search over the first ``fraction`` of each layer's rows
    of offsets; best agreement per layer and windows visited."""
    n = code.shape[0]
    best, windows = {}, 0
    for name, conn in conns.items():
        rows, cols = conn.shape[0] - n + 1, conn.shape[1] - n + 1
        if rows <= 0 or cols <= 0:
            continue
        layer_best = -1
        for k in range(4):
            drawn = np.rot90(code, k)
            for r in range(max(1, int(round(rows * fraction)))):
                for c in range(cols):
                    agree = int(np.sum(conn[r:r + n, c:c + n] == drawn))
                    windows += 1
                    layer_best = max(layer_best, agree)
        best[name] = layer_best
    return best, windows


def fft_best_in_rows(conns: dict[str, torch.Tensor], code: np.ndarray, fraction: float
                     ) -> dict[str, int]:
    """The FFT search's best per layer restricted to the rows the loop visited."""
    n = code.shape[0]
    out = {}
    for name, conn in conns.items():
        if conn.shape[0] < n or conn.shape[1] < n:
            continue
        maps = placement.agreement_maps(conn, placement.oriented_stack(code))
        rows = max(1, int(round(maps.shape[1] * fraction)))
        out[name] = int(maps[:, :rows].amax())
    return out


def bench_search(model_name: str, repeats: int) -> dict[str, Any]:
    """Only the first table's FFT / conv2d columns (seconds of CPU, not minutes)."""
    ticket = random_ticket(model_name, 0.8)
    code = qr.all_masks(qr.make_tag("A" * 43, "bench", ticket.fingerprint()))[0].modules
    conns = layer_connectivity(ticket.mask)
    search_s, fast = timed(lambda: placement.best_per_layer(conns, [code]), repeats)
    conv_s, conv_best = timed(lambda: conv2d_search(conns, code), repeats)
    assert conv_best == fft_found(fast), "conv2d and FFT search disagree"
    return {"model": model_name, "search_s": search_s, "conv_s": conv_s,
            "best": max(a for a, *_ in conv_best.values()), "layers": len(conv_best)}


def bench(model_name: str, fraction: float, tmp: Path, repeats: int) -> dict[str, Any]:
    ticket = random_ticket(model_name, 0.8)
    key = Ed25519PrivateKey.generate()
    tag = qr.make_tag(public_key_b64(key), "bench", ticket.fingerprint())
    codes = qr.all_masks(tag)

    def embed() -> Any:
        p = plan(ticket.mask, codes, min_entries=4)
        name = p.position.layer
        layer, _ = draw(ticket.mask[name], ticket.rewind[name], ticket.state[name],
                        placement.oriented(p.code.modules, p.position.orientation),
                        p.position.row, p.position.col, 4)
        return p, layer

    embed_s, (p, new_layer) = timed(embed)
    name = p.position.layer
    conns = layer_connectivity(ticket.mask)
    params = {"tag": tag, "tag_fingerprint": ticket.fingerprint(), "qr_version": 1,
              "qr_mask": p.code.mask, "qr_error": "H", "size": p.code.size, "layer": name,
              "row": p.position.row, "col": p.position.col,
              "orientation": p.position.orientation,
              "density": float(conns[name].float().mean()),
              "densities": {k: float(v.float().mean()) for k, v in conns.items()}}
    claim = make_claim(key, "signature", ticket.fingerprint(), params, "bench")
    signed_path = save_ticket(tmp / f"{model_name}_signed", signed_copy(ticket, name, new_layer))
    unsigned_path = save_ticket(tmp / model_name, ticket)

    def verify(path: Path, full: bool = False) -> Any:
        return verify_claim(str(path), claim, VerifyOptions(search=True, full_evidence=full))

    verify(signed_path)  # warm-up: imports, caches
    signed_s, v = timed(lambda: verify(signed_path), 3)
    assert v.status == "OWNED" and v.evidence["tag_decoded"], v.reason
    unsigned_s, v = timed(lambda: verify(unsigned_path), 2)
    assert "random_best_max" in v.evidence["search_null"], "the null did not run"
    early_codes = int(v.evidence["search_null"]["random_codes"])
    claimed = int(v.evidence["search_null"]["claimed_agreement"])
    # Baseline: the same verification with the whole 64-code null, as before the early stop.
    unsigned_full_s, full = timed(lambda: verify(unsigned_path, full=True), 1)
    assert full.status == v.status, "the early stop changed a verdict"
    positions = int(v.evidence["search"]["positions_tested"])

    code = p.code.modules
    search_s, fast = timed(lambda: placement.best_per_layer(conns, [code]), repeats)
    fft_best = {c.position.layer: c.agreement for c in fast}
    conv_s, conv_best = timed(lambda: conv2d_search(conns, code), repeats)
    assert conv_best == fft_found(fast), "conv2d and FFT search disagree"
    np_conns = {k: c.numpy() for k, c in conns.items()}
    loop_s, (loop_best, windows) = timed(lambda: paper_loop(np_conns, code, fraction))
    loop_s /= fraction
    assert loop_best == fft_best_in_rows(conns, code, fraction), "loop and FFT disagree"

    weights = {k: w for k, w in ticket.state.items() if k in conns}
    search_null(weights, params["densities"], 1, len(tag))  # warm-up (kernel cache)
    u0, s0 = cpu()
    null = search_null(weights, params["densities"], 1, len(tag))
    u1, s1 = cpu()
    null_user, null_sys = u1 - u0, s1 - s0
    u0, s0 = cpu()
    search_null(weights, params["densities"], 1, len(tag), stop_at=claimed)
    u1, s1 = cpu()
    early_user, early_sys = u1 - u0, s1 - s0
    return {"model": model_name, "positions": positions, "embed_s": embed_s,
            "search_s": search_s, "conv_s": conv_s, "loop_s": loop_s, "windows": windows,
            "best": max(fft_best.values()), "layers": len(fft_best),
            "verify_signed_s": signed_s, "verify_unsigned_s": unsigned_s,
            "null_user": null_user, "null_sys": null_sys, "null_codes": len(null.maxima),
            "verify_unsigned_full_s": unsigned_full_s, "early_codes": early_codes,
            "early_user": early_user, "early_sys": early_sys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop-fraction", type=float, default=0.25,
                    help="share of each layer's rows of offsets the paper's loop visits")
    ap.add_argument("--models", default="resnet20s,resnet18")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5,
                    help="FFT search and conv2d: best of this many calls each")
    ap.add_argument("--search-only", action="store_true",
                    help="only FFT search against conv2d (no loop, verify or null)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if args.search_only:
        print(f"torch threads: {torch.get_num_threads()}; CPU ms, best of {args.repeats} "
              f"each; load average {load:.1f}; checked: conv2d finds the same best agreement "
              "at the same (orientation, row, col) in every layer\n\n| model | layers | best "
              "agreement | FFT search ms | conv2d ms | conv2d / FFT |\n|---|---:|---:|---:|"
              "---:|---:|")
        for name in args.models.split(","):
            r = bench_search(name, args.repeats)
            print(f"| {r['model']} | {r['layers']} | {r['best']} | "
                  f"{1000 * r['search_s']:.1f} | {1000 * r['conv_s']:.1f} | "
                  f"{r['conv_s'] / r['search_s']:.2f}x |")
        return
    rows = []
    start = time.perf_counter()
    with TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(bench(name, args.loop_fraction, Path(tmp), args.repeats))
    print(f"torch threads: {torch.get_num_threads()}; CPU seconds (user + system); paper "
          f"loop over {args.loop_fraction:.0%} of the rows, scaled; load average {load:.1f} "
          f"-> {os.getloadavg()[0]:.1f}; {time.perf_counter() - start:.0f} s wall in all\n")
    print(f"One code, every layer, offset and orientation (FFT search and conv2d best of "
          f"{args.repeats} each; agreement checked: conv2d finds the same best agreement at "
          "the same (orientation, row, col) in every layer; the loop the same best over its "
          "rows):\n")
    print("| model | layers | best agreement | FFT search ms | conv2d ms | conv2d / FFT | "
          "paper loop s | paper loop / FFT |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['layers']} | {r['best']} | {1000 * r['search_s']:.1f} | "
              f"{1000 * r['conv_s']:.1f} | {r['conv_s'] / r['search_s']:.2f}x | "
              f"{r['loop_s']:.1f} | {r['loop_s'] / r['search_s']:.0f}x |")
    print("\nVerifier and embedder:\n")
    print("| model | positions searched | embed (no retrain) s | verify --search signed s | "
          "verify --search unsigned s (early null) | same, whole null (baseline) s | "
          "speed-up | null codes | whole null s (system share) | early null s (system "
          "share) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        null = r["null_user"] + r["null_sys"]
        early = r["early_user"] + r["early_sys"]
        print(f"| {r['model']} | {r['positions']:,} | {r['embed_s']:.2f} | "
              f"{r['verify_signed_s']:.2f} | {r['verify_unsigned_s']:.2f} | "
              f"{r['verify_unsigned_full_s']:.2f} | "
              f"{r['verify_unsigned_full_s'] / r['verify_unsigned_s']:.1f}x | "
              f"{r['early_codes']} of {r['null_codes']} | {null:.2f} "
              f"({r['null_sys'] / null:.1%}) | {early:.2f} "
              f"({r['early_sys'] / max(early, 1e-9):.1%}) |")


if __name__ == "__main__":
    main()
