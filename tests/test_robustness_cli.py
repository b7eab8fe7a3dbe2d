"""``ticketmark robustness``, ``transfer``, ``unpair`` and ``find --adversarial`` end to end."""

from __future__ import annotations

import json

import pytest

from tests.conftest import one_line_error, run_cli


def test_robustness_report_ticket_vs_dense(tmp_path, conv_ticket):
    dense = conv_ticket.parent / "round_0"
    res = run_cli("robustness", "--ticket", conv_ticket, "--dense", dense, "--eps", "0.05,0.2",
                  "--steps", "5", "--limit", "60", "--out", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    assert "PGD 0.2" in res.stdout and "dense" in res.stdout
    report = json.loads((tmp_path / "rep" / "robustness.json").read_text())
    assert (tmp_path / "rep" / "robustness_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    dense_row, ticket_row = report["rows"]
    assert dense_row["role"] == "dense" and dense_row["sparsity"] == 0.0
    assert ticket_row["role"] == "ticket" and ticket_row["sparsity"] > 0.4
    for row in report["rows"]:
        assert row["images"] == 60
        assert row["pgd"]["0.2"] <= row["pgd"]["0.05"] <= row["clean"]
        assert set(row["corruptions"]) == {"gaussian_noise", "gaussian_blur", "contrast",
                                           "brightness"}
        assert all(len(v) == 5 for v in row["corruptions"].values())


@pytest.mark.parametrize(("args", "needle"), [
    (["robustness", "--ticket", "{t}", "--eps", "a,b"], "comma-separated numbers"),
    (["robustness", "--ticket", "{t}", "--eps", "1.5"], "[0, 1] pixel units"),
    (["robustness", "--ticket", "{tmp}/none.safetensors"], "no ticket at"),
    (["transfer", "--released", "{t}", "--private", "{t}", "--eps", "0"], "needs an attack"),
    (["unpair", "--released", "{t}", "--private", "{t}", "--out", "{tmp}/u", "--report",
      "{tmp}/r.txt"], "must name a .json"),
    (["find", "--out", "{tmp}/f", "--model", "conv2", "--dataset", "digits",
      "--adversarial", "cw"], "unknown adversarial training"),
])
def test_robustness_commands_bad_input(args, needle, tmp_path, conv_ticket):
    res = run_cli(*[a.format(tmp=tmp_path, t=conv_ticket) for a in args])
    assert needle in one_line_error(res)
    assert not (tmp_path / "u.safetensors").exists() and not (tmp_path / "f").exists()


def test_transfer_and_unpair(tmp_path, conv_ticket):
    dense = conv_ticket.parent / "round_0"
    res = run_cli("transfer", "--released", conv_ticket, "--private", dense, "--eps", "0.15",
                  "--steps", "5", "--limit", "80", "--json")
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert 0 < stats["both_correct"] <= 80
    assert 0 <= stats["transfer_rate"] <= 100 and stats["white_box_hits"] > 0
    res = run_cli("unpair", "--released", conv_ticket, "--private", dense, "--out",
                  tmp_path / "unpaired", "--epochs", "1", "--eps", "0.15", "--steps", "3",
                  "--limit", "60", "--max-drop", "5", "--report", tmp_path / "u.json", "-q")
    assert res.returncode == 0, res.stderr
    assert "before:" in res.stdout and "after :" in res.stdout
    record = json.loads((tmp_path / "u.json").read_text())
    assert {"before", "after", "accuracy_cost", "unpair"} <= set(record)
    kept = record["unpair"]["epochs"][record["unpair"]["kept_epoch"]]
    assert kept["val_acc"] >= record["unpair"]["epochs"][0]["val_acc"] - 5  # the bound
    side = json.loads((tmp_path / "unpaired.json").read_text())
    owner = json.loads(conv_ticket.with_suffix(".json").read_text())
    assert side["sparsity"] == owner["sparsity"] and side["history"][-1]["kind"] == "unpair"


@pytest.mark.slow
def test_find_adversarial_imp_and_robust_early_bird(tmp_path):
    common = ["--model", "conv2", "--dataset", "digits", "--epochs", "2", "--rewind-epoch",
              "1", "--batch-size", "64", "--adversarial", "pgd", "--eps", "0.1", "--steps",
              "2", "-q"]
    res = run_cli("find", "--out", tmp_path / "imp", "--rounds", "1", "--rate", "0.5", *common)
    assert res.returncode == 0, res.stderr
    hp = json.loads((tmp_path / "imp" / "hparams.json").read_text())
    assert hp["train"]["adversarial"] == {"method": "pgd", "eps": 0.1, "steps": 2,
                                          "alpha": None}
    again = run_cli("find", "--out", tmp_path / "imp", "--rounds", "1", "--rate", "0.5",
                    *[a if a != "0.1" else "0.2" for a in common])
    assert "other settings (train)" in one_line_error(again)
    res = run_cli("find", "--out", tmp_path / "eb", "--method", "early-bird", "--structured",
                  "--sparsity", "0.5", "--check-unit", "step", "--check-every", "5",
                  "--window", "3", *common)
    assert res.returncode == 0, res.stderr
    side = json.loads((tmp_path / "eb" / "ticket.json").read_text())
    assert side["train"]["adversarial"]["eps"] == 0.1
    assert "search" in side and side["sparsity"] > 0.3
