"""Bad input through the CLI: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import one_line_error as _one_line_error
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["find", "--model", "nosuchnet", "--out", "{tmp}/a"], "unknown model"),
        (["find", "--dataset", "cifar10", "--data-dir", "{tmp}/none", "--out", "{tmp}/b"],
         "does not exist"),
        (["find", "--rate", "-0.2", "--out", "{tmp}/c"], "pruning rate"),
        (["find", "--method", "magic", "--out", "{tmp}/d"], "unknown finder"),
        (["find", "--epochs", "x", "--out", "{tmp}/e"], "epochs"),
        (["info", "{tmp}/missing.safetensors"], "no ticket"),
    ],
)
def test_bad_input(args, needle, tmp_path):
    res = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert needle in _one_line_error(res)
    assert not (tmp_path / "a").exists()


def test_corrupt_checkpoint(tmp_path, conv_ticket):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    bad.with_suffix(".json").write_text(conv_ticket.with_suffix(".json").read_text())
    assert "not a readable safetensors" in _one_line_error(run_cli("info", bad))


def test_info_shows_layers(conv_ticket):
    res = run_cli("info", conv_ticket)
    assert res.returncode == 0, res.stderr
    assert "sparsity" in res.stdout and "density" in res.stdout
