"""``ticketmark attack``: stolen tickets with their history, sweeps, and bad input."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import one_line_error as _one_line_error
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attack", "melt", "--in", "{t}", "--out", "{tmp}/s"], "unknown attack 'melt'"),
        (["attack", "prune", "--in", "{t}", "--out", "{tmp}/s", "--ratio", "1.0"],
         "prune ratio must be in [0, 1)"),
        (["attack", "noise", "--in", "{t}", "--out", "{tmp}/s", "--dataset", "mnist5k"],
         "dataset 'mnist5k' has input shape (1, 28, 28)"),
        (["attack", "sweep", "--in", "{t}", "--plan", "{tmp}/bad.json", "--out", "{tmp}/s"],
         "unknown attack 'melt' in attack #2"),
    ],
)
def test_attack_bad_input(args, needle, tmp_path, conv_ticket):
    (tmp_path / "bad.json").write_text(json.dumps(
        {"attacks": [{"kind": "noise"}, {"kind": "melt"}]}))
    res = run_cli(*[a.format(tmp=tmp_path, t=conv_ticket) for a in args])
    assert needle in _one_line_error(res)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.safetensors").exists()


def test_attack_prune_writes_stolen_ticket_with_history(tmp_path, conv_ticket):
    out = tmp_path / "stolen"
    res = run_cli("attack", "prune", "--in", conv_ticket, "--out", out, "--ratio", "0.5",
                  "--method", "layer", "-q")
    assert res.returncode == 0, res.stderr
    assert "stolen ticket" in res.stderr
    side = json.loads((tmp_path / "stolen.json").read_text())
    entry = side["history"][-1]
    assert entry["kind"] == "prune" and entry["params"]["ratio"] == 0.5
    assert entry["params"]["method"] == "layer"
    assert {"acc_before", "acc_after"} <= set(entry)
    owner = json.loads(conv_ticket.with_suffix(".json").read_text())
    assert side["sparsity"] == pytest.approx(1 - 0.5 * (1 - owner["sparsity"]), abs=1e-3)
    info = run_cli("info", out.with_suffix(".safetensors"))
    assert info.returncode == 0 and "history" in info.stdout


def test_attack_sweep_writes_table(tmp_path, conv_ticket):
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[attack]]\nkind = "prune"\nratio = [0.2, 0.6]\n\n'
        '[[attack]]\nkind = "quantize"\nscheme = ["int8", "ternary"]\n\n'
        '[[attack]]\nkind = "fill"\n\n[[attack]]\nkind = "permute"\n'
    )
    res = run_cli("attack", "sweep", "--in", conv_ticket, "--plan", plan, "--out",
                  tmp_path / "sweep", "--save-tickets", "-q")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "sweep" / "sweep.csv").open()))
    assert [r["attack"] for r in rows] == ["none", "prune", "prune", "quantize", "quantize",
                                           "fill", "permute"]
    assert rows[-1]["acc_after"] == rows[0]["acc_after"]  # permutation preserves accuracy
    assert float(rows[5]["sparsity"]) == 0.0  # fill: no zeros left
    assert float(rows[4]["effective_bits"]) <= 1.59
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert md.count("\n| ") == 8 and "acc_after" in md
    assert (tmp_path / "sweep" / rows[1]["ticket"]).is_file()
