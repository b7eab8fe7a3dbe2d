"""Light commands start without torch, and the thread policy reaches torch.

Start-up cost is checked by what gets imported (``python -X importtime`` lists every
module), not by timing: a busy machine cannot make this test flaky.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "matplotlib")


def _imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "ticketmark", *args],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    assert "Traceback" not in res.stderr, res.stderr
    return {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["verify", "--help"], ["lock", "--help"],
                                  ["attack", "prune", "--help"], ["find", "--help"]])
def test_help_imports_no_heavy_library(args):
    modules = _imported(*args)
    assert "ticketmark.cli.app" in modules  # the listing is real
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def test_keygen_runs_without_torch(tmp_path):
    modules = _imported("keygen", "--out", str(tmp_path / "owner"))
    assert (tmp_path / "owner.pem").exists()
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def _threads_after_cli(*args: str, env: dict[str, str] | None = None) -> int:
    code = ("import sys\nfrom ticketmark.cli.main import main\n"
            f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass\n"
            "import torch\nprint(torch.get_num_threads())")
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TICKETMARK_THREADS")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**full_env, **(env or {})})
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip().splitlines()[-1])


def test_threads_option_and_default_reach_torch():
    from ticketmark.threads import available_cores

    many = min(2, available_cores())  # torch caps the count at the cores
    assert _threads_after_cli("--threads", str(many), "info", "--models") == many
    assert _threads_after_cli("info", "--models") == 1  # the default
    assert _threads_after_cli("info", "--models", env={"TICKETMARK_THREADS": str(many)}) == many
    assert _threads_after_cli("--threads", "0", "info", "--models") == available_cores()
    # the option beats the environment
    assert _threads_after_cli("--threads", "1", "info", "--models",
                              env={"TICKETMARK_THREADS": str(many)}) == 1


def test_cli_copies_of_registry_names_match_the_registries():
    from ticketmark.cli import lock as lock_cli
    from ticketmark.cli import options as options_cli
    from ticketmark.cli import serve as serve_cli
    from ticketmark.cli import trigger as trigger_cli
    from ticketmark.ownership.derive import DEFAULT_THRESHOLD
    from ticketmark.ownership.lock import CHOOSERS, PATH_METHODS
    from ticketmark.serving import app as server

    assert options_cli.DERIVE_THRESHOLD == DEFAULT_THRESHOLD
    assert tuple(CHOOSERS) == lock_cli.CHOOSERS
    assert tuple(PATH_METHODS) == lock_cli.PATH_METHODS
    assert (serve_cli.MAX_BODY, serve_cli.MAX_BATCH) == (server.MAX_BODY, server.MAX_BATCH)
    from ticketmark.ownership.trigger.embed import EmbedConfig

    assert EmbedConfig().entangle == trigger_cli.ENTANGLE

