"""Load test of ``ticketmark serve``: throughput, p50/p99 latency, errors, RSS and threads.

Each server under test is started as a real ``python -m ticketmark serve`` process on
127.0.0.1 (a free port) from a source tree given by ``--src`` (``PYTHONPATH``), so an older
checkout is measured against this one in the same run:

    git archive <old-commit> src | tar -x -C /tmp/before
    python benchmarks/bench_serve.py --src before=/tmp/before/src --src after=src

Clients are threads of this process, each with one keep-alive HTTP/1.1 connection (it
reconnects after an error), sending ``--requests`` POST /predict of ``--batch`` digits-sized
inputs. Every loop is bounded in count and time; the servers are stopped at the end.
The model is an untrained conv2 (1x8x8 inputs, 10 classes): serving cost, not accuracy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_ticket(folder: Path) -> Path:
    import torch

    from ticketmark.io import Ticket, save_ticket
    from ticketmark.io.ticket import state_of
    from ticketmark.models import build_model
    from ticketmark.sparsity import Mask

    torch.manual_seed(0)
    model = build_model("conv2", 1, 10, 8)
    mask = Mask({n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
                 if p.dim() == 4})
    return save_ticket(folder / "bench", Ticket("conv2", "digits", 1, 10, 8, state_of(model),
                                                mask))


def start(src: str, ticket: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ticketmark", "serve", "--model",
                             str(ticket), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    found = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"server from {src} did not start: {line}{proc.stderr.read()}")
    return proc, int(found.group(1))


def proc_status(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1))


def run_clients(port: int, clients: int, requests: int, body: bytes, deadline: float
                ) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or "labels" not in json.loads(data):
                    raise OSError(f"HTTP {resp.status}")
                mine.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException, ValueError):
                with lock:
                    errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", default=[],
                    help="LABEL=PATH of a source tree to serve from (repeatable)")
    ap.add_argument("--clients", default="1,16,64", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=100, help="requests per client")
    ap.add_argument("--batch", type=int, default=1, help="inputs per request")
    ap.add_argument("--max-seconds", type=float, default=60, help="cap per measurement")
    args = ap.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    sources = [s.split("=", 1) for s in args.src] or [["this", here]]
    x = np.random.default_rng(0).normal(size=(args.batch, 1, 8, 8)).astype(np.float32)
    body = json.dumps({"inputs": x.tolist()}).encode()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ticket = make_ticket(Path(tmp))
        for label, src in sources:
            proc, port = start(src, ticket)
            try:
                run_clients(port, 1, 5, body, time.monotonic() + 10)  # warm-up
                for n in [int(c) for c in args.clients.split(",")]:
                    lat, errors, wall = run_clients(port, n, args.requests, body,
                                                    time.monotonic() + args.max_seconds)
                    ms = np.array(lat) * 1000
                    rows.append((label, n, len(lat), errors, len(lat) / wall,
                                 float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                                 float(np.percentile(ms, 99)) if len(ms) else float("nan"),
                                 proc_status(proc.pid, "VmRSS") / 1024,
                                 proc_status(proc.pid, "Threads")))
            finally:
                hwm = proc_status(proc.pid, "VmHWM") / 1024
                proc.terminate()
                _, err = proc.communicate(timeout=30)
                tracebacks = err.count("Traceback")
            rows.append((label, "peak", "", "", "", "", "", hwm, f"tracebacks={tracebacks}"))
    print(f"batch {args.batch}, {args.requests} requests per client (keep-alive), "
          f"{os.cpu_count()} CPUs")
    print("| server | clients | ok | errors | req/s | p50 ms | p99 ms | RSS MiB | threads |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in r]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
