"""A forking CLI runner for the tests (not a test module).

Every ``python -m ticketmark ...`` a test starts spends 1.5 to 4 s importing torch (and,
once it trains, torch._dynamo), numpy, scipy and matplotlib before ticketmark does its
work; the suite starts around a hundred of them. This helper is one long-lived Python
process (the *zygote*) that imports those libraries once and then forks a child per
command. The child is a separate process like any other: it takes the test's arguments,
environment, working directory and umask, imports ``ticketmark`` afresh (nothing of
ticketmark is imported in the zygote, so its import-time behaviour is what a real run
sees), runs ``python -m ticketmark`` through ``runpy`` with stdin from /dev/null and
stdout/stderr to files, and exits with the command's exit code.

``tests.conftest.run_cli`` uses it when ``os.fork`` exists and ``TICKETMARK_TESTS_FORK`` is
not ``0``; ``tests/test_cli_runner.py`` checks that it answers as a real subprocess does.

Protocol: one JSON request per line on the zygote's stdin, one JSON reply per line on its
stdout (``{"code": int}`` or ``{"timeout": true}``). The zygote writes nothing else there.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# What the zygote imports before forking: the slow third-party libraries, never ticketmark.
# torch._dynamo alone is 2 s: torch.optim imports it when the first optimizer is built.
PRELOAD = ("torch", "torch._dynamo", "torch.optim", "numpy", "scipy.special", "scipy.stats",
           "safetensors.torch", "cryptography.hazmat.primitives.asymmetric.ed25519",
           "matplotlib", "matplotlib.pyplot", "PIL.Image", "rich.console", "typer")


def _child(req: dict) -> None:
    """In the forked child: become ``python -m ticketmark ARGS`` and never return."""
    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills whatever it started, too
        os.chdir(req["cwd"])
        os.umask(req["umask"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        # Fresh standard streams on the new descriptors, buffered as a real run's would be.
        sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1,  # noqa: SIM115
                                           errors="backslashreplace", closefd=False)
        import numpy as np

        np.random.seed()  # a fresh process draws its own global numpy state
        sys.argv = [sys.executable, *req["args"]]
        sys.path[0] = os.getcwd()  # what ``python -m`` puts first
        import runpy

        try:
            runpy.run_module("ticketmark", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream (the reader went away)
                stream.flush()
        os._exit(code & 0xFF)


def _wait(pid: int, timeout: float) -> dict:
    import select
    import time

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: poll
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return {"code": os.waitstatus_to_exitcode(status)}
            time.sleep(0.01)
        ready = []
    else:
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
    if not ready:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {"timeout": True}
    _, status = os.waitpid(pid, 0)
    return {"code": os.waitstatus_to_exitcode(status)}


def serve() -> None:
    """The zygote's loop: preload, then fork one child per request line."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # nothing the zygote itself prints may corrupt the reply channel
    for line in requests:
        req = json.loads(line)
        replies.flush()
        pid = os.fork()
        if pid == 0:
            os.close(replies.fileno())
            _child(req)
        replies.write(json.dumps(_wait(pid, req["timeout"])) + "\n")
        replies.flush()


class Zygote:
    """The pytest side: starts the zygote on first use, one command at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="tm_cli_"))
        self._n = 0

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            root = str(Path(__file__).resolve().parents[1])
            code = (f"import sys; sys.path.insert(0, {root!r}); "
                    "from tests.cli_zygote import serve; serve()")
            self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, bufsize=1)
        return self._proc

    def run(self, argv: list[str], cwd: str | Path | None, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess:
        with self._lock:
            proc = self._start()
            self._n += 1
            out, err = self._tmp / f"{self._n}.out", self._tmp / f"{self._n}.err"
            umask = os.umask(0)
            os.umask(umask)
            req = {"args": argv, "cwd": str(cwd or os.getcwd()), "env": env, "umask": umask,
                   "timeout": timeout, "out": str(out), "err": str(err)}
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the CLI zygote died")
            reply = json.loads(line)
            stdout = out.read_text(errors="replace") if out.exists() else ""
            stderr = err.read_text(errors="replace") if err.exists() else ""
            for path in (out, err):
                path.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "ticketmark", *argv]
            if reply.get("timeout"):
                raise subprocess.TimeoutExpired(cmd, timeout, stdout, stderr)
            return subprocess.CompletedProcess(cmd, reply["code"], stdout, stderr)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)
