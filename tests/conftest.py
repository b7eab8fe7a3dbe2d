"""Shared fixtures: small real tickets trained once per test session on embedded data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One thread: the tests' tensors are small, and a second thread only contends (the CLI
# defaults to one too; see docs/performance.md).
torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """What ``-n auto`` (pyproject's addopts) means here: two worker processes when the run
    covers folders (``python -m pytest``: the whole suite, every file on one worker with its
    module fixtures, ``--dist loadfile``), none when it names test files or tests, so a
    targeted run stays one process. ``TICKETMARK_TEST_WORKERS=N`` overrides; ``-n 0`` too."""
    override = os.environ.get("TICKETMARK_TEST_WORKERS")
    if override is not None:
        return max(0, int(override))
    if any("::" in arg or Path(arg).is_file() for arg in config.args):
        return 0
    from ticketmark.threads import available_cores

    return min(2, available_cores())


@pytest.fixture(scope="session")
def digits():
    from ticketmark.data import load_dataset

    return load_dataset("digits")


def _find(tmp: Path, model: str, rounds: int, rate: float, epochs: int, rewind: int = 1):
    from ticketmark.finding import FindConfig, run_imp
    from ticketmark.training import TrainConfig

    cfg = FindConfig(model=model, dataset="digits", rounds=rounds, rate=rate,
                     rewind_epoch=rewind, train=TrainConfig(epochs=epochs, batch_size=64))
    run_imp(cfg, tmp, progress=False)
    return tmp / "ticket.safetensors"


def _shared_run(tmp_path_factory, name: str, *find_args) -> Path:
    """A session ticket found once per test run, even across xdist workers.

    Each worker has its own session, so a plain session fixture would train the same
    (seeded, deterministic) ticket once per worker. The first worker to get here trains it
    into a folder beside the workers' own temporary folders, under a file lock; the others
    wait for the lock and read it. Tests treat these tickets as read-only.
    """
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's folder, shared by its workers
    folder = root / f"shared_{name}"
    with open(root / f"shared_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "ticket.safetensors").exists():
            _find(folder, *find_args)
    return folder / "ticket.safetensors"


@pytest.fixture(scope="session")
def resnet_ticket(tmp_path_factory) -> Path:
    """resnet20s on digits, 2 IMP rounds at rate 0.5 (75% sparse), 3 epochs a round."""
    return _shared_run(tmp_path_factory, "resnet_ticket", "resnet20s", 2, 0.5, 3)


@pytest.fixture(scope="session")
def conv_ticket(tmp_path_factory) -> Path:
    """conv2 on digits, 1 IMP round at rate 0.5, 3 epochs a round."""
    return _shared_run(tmp_path_factory, "conv_ticket", "conv2", 1, 0.5, 3)


_ZYGOTE = None


def _zygote():
    """The forking runner (tests/cli_zygote.py), started on first use; None if off."""
    global _ZYGOTE
    if _ZYGOTE is None and hasattr(os, "fork") and os.environ.get(
            "TICKETMARK_TESTS_FORK", "1") != "0":
        import atexit

        from tests.cli_zygote import Zygote

        _ZYGOTE = Zygote()
        atexit.register(_ZYGOTE.close)
    return _ZYGOTE


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict | None = None, fork: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m ticketmark ARGS`` as a user would, capturing both streams.

    Each command is its own process with its own environment, working directory and umask.
    By default it is forked from a process that has already imported torch and the other
    slow libraries (tests/cli_zygote.py: about 1.5 s saved per command); ``fork=False``
    (or ``TICKETMARK_TESTS_FORK=0`` for the whole run) starts a fresh interpreter instead.
    """
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    argv = ["-m", "ticketmark", *map(str, args)]
    zygote = _zygote() if fork else None
    if zygote is not None:
        return zygote.run(argv[2:], cwd, full_env, timeout)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=full_env)


def one_line_error(res: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert the CLI failed with exactly one ``error:`` line and no traceback; return it."""
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]
