"""Profile ``ticketmark demo --fast``: CPU time and the top functions by cumulative time.

    python benchmarks/profile_demo.py --out /tmp/prof [--src /path/to/other/checkout/src]
        [--top 10] [-- extra demo arguments]

Runs the demo in a child process under ``cProfile`` (``--src`` puts another checkout's
``src`` first on ``PYTHONPATH``, to profile main against a branch under the same
conditions), then prints the child's CPU time (user + system, from ``getrusage``; the
profiler's own overhead is included, alike for both checkouts) and a Markdown table of the
``--top`` functions by cumulative time. The raw profile stays in ``OUT/demo.prof``.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path


def top_table(prof: Path, top: int) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(str(prof), stream=stream)
    stats.sort_stats("cumulative")
    rows = ["| cumulative s | own s | calls | function |", "|---:|---:|---:|---|"]
    for func, (_, ncalls, tottime, cumtime, _) in sorted(
            stats.stats.items(), key=lambda kv: -kv[1][3])[:top]:
        path, line, name = func
        where = f"{Path(path).name}:{line}({name})" if line else name
        rows.append(f"| {cumtime:.1f} | {tottime:.1f} | {ncalls} | `{where}` |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--src", type=Path, default=None)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("demo_args", nargs="*")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    prof = args.out / "demo.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "ticketmark", "demo",
           "--fast", "--quiet", "--out", str(args.out / "demo"), *args.demo_args]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"demo --fast under cProfile ({args.src or 'this checkout'}): CPU user "
          f"{r.ru_utime:.1f} s + system {r.ru_stime:.1f} s = {r.ru_utime + r.ru_stime:.1f} s; "
          f"wall {wall:.0f} s; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print(top_table(prof, args.top))


if __name__ == "__main__":
    main()
