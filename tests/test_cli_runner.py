"""The tests' forking CLI runner answers as a fresh ``python -m ticketmark`` does."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from tests.conftest import _zygote, run_cli

pytestmark = pytest.mark.skipif(_zygote() is None, reason="the forking runner is off")


@pytest.mark.parametrize("args", [["--help"], ["info", "no_such_ticket"],
                                  ["lock", "--ticket", "t", "--method", "magic"],
                                  ["keygen", "--out", "k", "--passphrase-env", "TM_PASS"]])
def test_same_answer_as_a_fresh_interpreter(args, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = {"TM_PASS": "a passphrase", "COLUMNS": "77"}
    forked = run_cli(*args, cwd=tmp_path / "a", env=env)
    fresh = run_cli(*args, cwd=tmp_path / "b", env=env, fork=False)
    assert (forked.returncode, forked.stdout.replace("/a/", "/b/"), forked.stderr) == (
        fresh.returncode, fresh.stdout.replace("/a/", "/b/"), fresh.stderr)
    if args[0] == "keygen":  # cwd and the environment reached the child: an encrypted key
        assert b"ENCRYPTED" in (tmp_path / "a" / "k.pem").read_bytes()


def test_umask_and_exit_codes_reach_the_child(tmp_path):
    old = os.umask(0o077)
    try:
        res = run_cli("keygen", "--out", tmp_path / "k")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "k.pub").stat().st_mode) == 0o600  # narrowed by 077
    assert run_cli("keygen", "--out", tmp_path / "k").returncode == 2


def test_a_command_past_its_timeout_is_killed(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("serve", "--model", "no_such_model", "--port", "0", timeout=0.01)
    assert run_cli("info", tmp_path).returncode == 2  # the runner still answers
