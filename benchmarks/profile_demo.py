"""Profile ``ticketmark demo --fast``: CPU time and the top functions by cumulative time.

    python benchmarks/profile_demo.py --out /tmp/prof [--src /path/to/other/checkout/src]
        [--top 10] [-- extra demo arguments]

Runs the demo in a child process under ``cProfile`` (``--src`` puts another checkout's
``src`` first on ``PYTHONPATH``, to profile main against a branch under the same
conditions), then prints the child's CPU time (user + system, from ``getrusage``; the
profiler's own overhead is included, alike for both checkouts) and a Markdown table of the
``--top`` functions by cumulative time, all and ticketmark's own. cProfile's clock is the
wall clock: on a loaded machine its seconds include waiting for a core, so read its
proportions, and the CPU total above it. The raw profile stays in ``OUT/demo.prof``;
``--table-only OUT/demo.prof`` prints the tables again.
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


def top_table(prof: Path, top: int, only: str | None = None) -> str:
    """Markdown table of the ``top`` functions by cumulative time (``only``: functions
    whose file path contains this text, e.g. ``/ticketmark/`` for the project's own)."""
    stream = io.StringIO()
    stats = pstats.Stats(str(prof), stream=stream)
    items = [kv for kv in stats.stats.items() if only is None or only in kv[0][0]]
    rows = ["| cumulative s | own s | calls | function |", "|---:|---:|---:|---|"]
    for func, (_, ncalls, tottime, cumtime, _) in sorted(items, key=lambda kv: -kv[1][3])[:top]:
        path, line, name = func
        path = path[path.index(only) + 1:] if only is not None else Path(path).name
        where = f"{path}:{line}({name})" if line else name
        rows.append(f"| {cumtime:.1f} | {tottime:.1f} | {ncalls} | `{where}` |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--src", type=Path, default=None)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--table-only", type=Path, default=None, metavar="PROF",
                    help="just print the tables of an existing profile")
    ap.add_argument("demo_args", nargs="*")
    args = ap.parse_args()
    if args.table_only is not None:
        print(tables(args.table_only, args.top))
        return
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
    print(tables(prof, args.top))


def tables(prof: Path, top: int) -> str:
    return (f"All functions:\n\n{top_table(prof, top)}\n\nticketmark's own functions:\n\n"
            f"{top_table(prof, top, '/ticketmark/')}")


if __name__ == "__main__":
    main()
