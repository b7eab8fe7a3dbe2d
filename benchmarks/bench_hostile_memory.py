"""Peak memory per byte read, for every suspect loader, on honest and adversarial files.

Issue 30: a 1.6 KB ``.pt`` asked for 4 TB, 100 ONNX initializers over one 16 MiB external
file took 3.5 GB, a reveal's .npy header claiming 3.6 TiB was a MemoryError. Each case here
runs in a fresh subprocess (so peaks do not mix): it imports everything, notes its resident
memory, reads the file with ticketmark's loader, and reports the peak above that baseline
divided by the bytes on disk (model file plus external data). The same file is then read
the straightforward way (``torch.load`` + ``.float()``, ``onnx.load`` with external data +
``numpy_helper.to_array``, ``np.load``) in another subprocess, as the comparison.

    python benchmarks/bench_hostile_memory.py [--mib 16] [--views 100] [--skip-naive]

Target: ticketmark's peak <= 4x the bytes read (plus the interpreter's baseline, which the
subtraction removes). "refused" means one error line before anything was materialised (its
peak is the loader's own small constant; no ratio is printed for it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, re, sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
import onnx
from onnx import numpy_helper
from ticketmark.errors import TicketmarkError
from ticketmark.io.suspect import load_suspect_weights
from ticketmark.ownership.trigger.commitment import load_reveal

def status(key):
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1)) * 1024

def naive(path):
    p = Path(path)
    if p.suffix == ".pt":
        obj = torch.load(p, weights_only=True)  # verify then copies each tensor (clone)
        return {k: v.float().clone(memory_format=torch.contiguous_format)
                for k, v in obj.items()}
    if p.suffix == ".onnx":
        m = onnx.load(str(p), load_external_data=True)
        return {t.name: numpy_helper.to_array(t).astype(np.float32)
                for t in m.graph.initializer}
    if p.suffix == ".json":
        import base64, io
        raw = base64.b64decode(json.loads(p.read_text())["bases"])
        return np.load(io.BytesIO(raw), allow_pickle=False)
    from safetensors.torch import load_file
    return {k: v.float() for k, v in load_file(str(p)).items()}

mode, path = sys.argv[1], sys.argv[2]
base = status("VmRSS")
try:
    if mode == "naive":
        out = naive(path)
    elif path.endswith(".json"):
        out = load_reveal(path)
    else:
        out = load_suspect_weights(path)
    # Touch every value, as a verifier will: memory-mapped pages count once read.
    values = out.values() if isinstance(out, dict) else [getattr(out, "bases", out)]
    for v in values:
        if v is not None:
            v.sum()
    outcome = "loaded"
except TicketmarkError as exc:
    outcome = "refused: " + str(exc)[:60]
except Exception as exc:
    outcome = "crashed: " + type(exc).__name__
print(json.dumps({"outcome": outcome, "peak": status("VmHWM") - base, "base": base}))
"""


def run(mode: str, path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], capture_output=True,
                          text=True, env=env, timeout=600)
    if proc.returncode != 0:
        return {"outcome": f"died (exit {proc.returncode})", "peak": 0, "base": 0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cases(root: Path, mib: int, views: int) -> list[tuple[str, Path, int]]:
    """(name, file to load, bytes on disk including external data)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from tests import hostile_files as hf

    out: list[tuple[str, Path, int]] = []

    def add(name: str, path: Path, *extra: Path) -> None:
        own = 0 if path.is_dir() else path.stat().st_size
        out.append((name, path, own + sum(p.stat().st_size for p in extra)))

    add("safetensors, honest", hf.legit_safetensors(root / "legit.safetensors", mib))
    f8 = root / "f8.safetensors"
    save_file({"w": torch.randn(mib << 20).to(torch.float8_e4m3fn)}, str(f8))
    add("safetensors, float8 (4x when read)", f8)
    shards = root / "shards"
    shards.mkdir()
    for i in range(2):
        save_file({f"s{i}.weight": torch.randn((mib << 20) // 8)},
                  str(shards / f"m{i}.safetensors"))
    add("folder of 2 safetensors shards", shards, *shards.iterdir())
    add(".pt, honest", hf.legit_pt(root / "legit.pt", mib))
    add(".pt, stride-0 view (4 TB claimed)", hf.pt_stride0(root / "stride0.pt"))
    add(f".pt, {views} views of one storage", hf.pt_shared(root / "shared.pt", views, mib))
    add(".pt, deflated archive (256 MiB)", hf.pt_zip_bomb(root / "bomb.pt", 256))
    add("ONNX, honest (inline)", hf.legit_onnx(root / "legit.onnx", mib))
    ext = root / "ext"
    ext.mkdir()
    (ext / "weights.bin").write_bytes(np.random.default_rng(0).standard_normal(
        (mib << 20) // 4).astype(np.float32).tobytes())
    n = (mib << 20) // 4
    hf._onnx(ext / "model.onnx", {}, [hf._external("w", [n // 64, 64], "weights.bin", 0, n * 4)])
    add("ONNX, honest (external data)", ext / "model.onnx", ext / "weights.bin")
    shared = hf.onnx_shared_external(root / "oshared", views, mib)
    add(f"ONNX, {views} initializers on one file", shared, root / "oshared" / "weights.bin")
    trig = root / "trig"
    from tests.hostile_support import trigger_claim

    _, reveal = trigger_claim(trig)
    big = hf.reveal_with_bases(reveal, root / "huge_npy.json",
                               hf.npy_claiming((1 << 20, 3, 1 << 10, 1 << 10)))
    add("reveal, .npy header claiming 3.6 TiB", big)
    bases = np.zeros(((mib << 20) // 4 // 64, 1, 8, 8), np.float32)
    import io

    buf = io.BytesIO()
    np.save(buf, bases, allow_pickle=False)
    add("reveal, honest bases", hf.reveal_with_bases(reveal, root / "bases.json",
                                                     buf.getvalue()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=16, help="size of the honest/shared payloads")
    ap.add_argument("--views", type=int, default=100, help="views / initializers sharing one")
    ap.add_argument("--skip-naive", action="store_true", help="only ticketmark's loaders")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = cases(Path(tmp), args.mib, args.views)
        print(f"{'case':40} {'bytes read':>12} {'ticketmark':>34} {'peak/bytes':>10}  "
              f"{'naive':>28} {'peak/bytes':>10}")
        worst = 0.0
        for name, path, size in rows:
            ours = run("ours", path)
            loaded = ours["outcome"] == "loaded"
            ratio = f"{ours['peak'] / size:.2f}" if loaded else "-"
            if loaded:
                worst = max(worst, ours["peak"] / size)
            naive = {"outcome": "-", "peak": 0} if args.skip_naive else run("naive", path)
            n_ratio = f"{naive['peak'] / size:.2f}" if naive["outcome"] == "loaded" else "-"
            print(f"{name:40} {size:>12,} {ours['outcome'][:22]:>22} "
                  f"{ours['peak'] / 2**20:>9.1f} MiB {ratio:>10}  "
                  f"{naive['outcome'][:16]:>16} {naive['peak'] / 2**20:>9.1f} MiB "
                  f"{n_ratio:>10}")
        print(f"\nworst ticketmark peak / bytes read over files it loaded: {worst:.2f} "
              "(target <= 4); baseline RSS after imports subtracted "
              f"(~{ours['base'] / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
