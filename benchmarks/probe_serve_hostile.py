"""Probe a ``ticketmark serve`` with the hostile-input cases of issue 17 (item 8).

Runs each case against a real server started from the source tree given by ``--src``
(``PYTHONPATH``), so an older checkout can be compared with this one:

    git archive <old-commit> src | tar -x -C /tmp/before
    python benchmarks/probe_serve_hostile.py --src before=/tmp/before/src --src after=src

and prints one table row per case and server. The regression tests for the same cases are
in ``tests/test_serve_hostile.py``; this script only reports what each server does.
Everything is bounded: a few hundred connections at most, each with a timeout.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import make_ticket, proc_status, start  # noqa: E402


def post(base: str, body: bytes) -> str:
    req = urllib.request.Request(base + "/predict", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", "")
        except ValueError:
            msg = ""
        return f"{exc.code} {msg[:40]}"
    except OSError as exc:
        return f"{type(exc).__name__}"


def npy_claiming(shape: tuple[int, ...]) -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + repr(shape) + ", }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 16
    return json.dumps({"npy": base64.b64encode(raw).decode()}).encode()


def half_sent_closed(port: int, wait: float) -> str:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-")
    s.settimeout(wait)
    t0 = time.monotonic()
    try:
        while s.recv(4096):
            pass
        return f"closed after {time.monotonic() - t0:.1f} s"
    except ConnectionResetError:
        return f"reset after {time.monotonic() - t0:.1f} s"
    except TimeoutError:
        return f"still open after {wait:.0f} s"
    finally:
        s.close()


def idle_threads(pid: int, port: int, n: int) -> str:
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /predict HTTP/1.1\r\n")
            socks.append(s)
        time.sleep(1)
        return f"{proc_status(pid, 'Threads')} threads"
    finally:
        for s in socks:
            s.close()


def hang_ups(port: int) -> None:
    body = json.dumps({"inputs": [[[[0.0] * 8] * 8]] * 64}).encode()
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        s.close()
    time.sleep(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", default=[], help="LABEL=PATH (repeatable)")
    ap.add_argument("--wait", type=float, default=30, help="seconds to wait for a close")
    args = ap.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    sources = [s.split("=", 1) for s in args.src] or [["this", here]]
    cases = {
        "nesting 5,000 deep": b"[" * 5000 + b"]" * 5000,
        "5,000-digit integer": b'{"inputs": ' + b"9" * 5000 + b"}",
        "4,000-digit integer in inputs": b'{"inputs": [[[[' + b"9" * 4000 + b"]]]]}",
        "npy header shape (10**12, 1, 8, 8)": npy_claiming((10**12, 1, 8, 8)),
        "8 MiB of numbers": b'{"inputs": [' + b"0," * (4 * 1024 * 1024 - 1) + b"0]}",
    }
    import tempfile

    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ticket = make_ticket(Path(tmp))
        for label, src in sources:
            proc, port = start(src, ticket)
            base = f"http://127.0.0.1:{port}"
            col: dict[str, str] = {}
            try:
                for name, body in cases.items():
                    before = proc_status(proc.pid, "VmHWM")
                    col[name] = post(base, body)
                    grown = (proc_status(proc.pid, "VmHWM") - before) / 1024
                    if grown > 20:
                        col[name] += f" (peak +{grown:.0f} MiB)"
                col["half-sent request"] = half_sent_closed(port, args.wait)
                col["150 idle half-sent connections"] = idle_threads(proc.pid, port, 150)
                hang_ups(port)
            finally:
                proc.terminate()
                _, err = proc.communicate(timeout=30)
            col["10 clients hanging up: tracebacks on stderr"] = str(err.count("Traceback"))
            results[label] = col
    labels = [label for label, _ in sources]
    print("| case | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for case in next(iter(results.values())):
        print(f"| {case} | " + " | ".join(results[la][case] for la in labels) + " |")


if __name__ == "__main__":
    main()
