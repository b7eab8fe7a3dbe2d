"""IMP end to end: rounds, resumption after a real kill, and DDP under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ticketmark.finding import FindConfig, run_imp, run_oneshot
from ticketmark.io import load_ticket
from ticketmark.training import TrainConfig


def test_imp_prunes_rate_per_round_and_rewinds(tmp_path):
    cfg = FindConfig(model="lenet300", dataset="digits", rounds=2, rate=0.2, rewind_epoch=1,
                     train=TrainConfig(epochs=2, batch_size=64))
    ticket = run_imp(cfg, tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())["rounds"]
    assert [r["round"] for r in summary] == [0, 1, 2]
    assert summary[2]["sparsity"] == pytest.approx(1 - 0.8**2, abs=1e-4)
    assert ticket.rewind is not None
    r0 = load_ticket(tmp_path / "round_0")
    r2 = load_ticket(tmp_path / "round_2")
    assert all((r2.rewind[k] == r0.rewind[k]).all() for k in r0.rewind)  # same rewind point
    assert (tmp_path / "accuracy_vs_sparsity.png").stat().st_size > 1000
    assert (tmp_path / "round_1" / "metrics.jsonl").read_text().count("\n") == 2


def test_rerun_with_other_flags_is_refused(tmp_path):
    cfg = FindConfig(model="lenet300", dataset="digits", rounds=0,
                     train=TrainConfig(epochs=1))
    run_imp(cfg, tmp_path, progress=False)
    cfg2 = FindConfig(model="lenet300", dataset="digits", rounds=0, rate=0.5,
                      train=TrainConfig(epochs=1))
    from ticketmark.errors import TicketmarkError

    with pytest.raises(TicketmarkError, match="other settings"):
        run_imp(cfg2, tmp_path, progress=False)


@pytest.mark.parametrize("method", ["omp", "random"])
def test_oneshot_reaches_target_sparsity(tmp_path, method):
    cfg = FindConfig(method=method, model="conv2", dataset="digits", sparsity=0.8,
                     rewind_epoch=1, train=TrainConfig(epochs=2, batch_size=64))
    ticket = run_oneshot(cfg, tmp_path, progress=False)
    assert ticket.mask.sparsity() == pytest.approx(0.8, abs=1e-4)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "process ended"
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_killed_run_resumes_after_last_finished_round(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "ticketmark", "find", "--model", "lenet300", "--dataset",
            "mnist5k", "--rounds", "3", "--epochs", "4", "--rewind-epoch", "1",
            "--out", str(out), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "round_0" / "ticket.json", proc, timeout=240)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "round_3").exists(), "run finished before it could be killed"
    before = {p: p.read_bytes() for p in (out / "round_0").glob("ticket.*")}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(p.read_bytes() == data for p, data in before.items())  # untouched
    rows = json.loads((out / "summary.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert rows[3]["sparsity"] == pytest.approx(1 - 0.8**3, abs=1e-4)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name(
    "torchrun").exists(), reason="torchrun not installed")
@pytest.mark.slow  # over 15 s on 2 cores; the default run stays under 10 min
def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else "torchrun", "--standalone",
           "--nproc_per_node=2", "-m", "ticketmark", "find", "--model", "lenet300",
           "--dataset", "digits", "--rounds", "1", "--epochs", "3", "--out",
           str(tmp_path / "ddp"), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads((tmp_path / "ddp" / "summary.json").read_text())["rounds"]
    assert rows[1]["sparsity"] == pytest.approx(0.2, abs=1e-4)
    # each rank saw half the data per epoch, yet the result is a working classifier
    assert rows[1]["test_acc"] > 80.0
    metrics = (tmp_path / "ddp" / "round_1" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3  # written once (rank 0), not once per rank


def test_a_run_saved_before_the_adversarial_field_still_resumes(tmp_path):
    """hparams.json files written before ``TrainConfig.adversarial`` existed hold no such
    key; a clean run must still match them (it once refused: 'other settings (train)')."""
    from ticketmark.finding.layout import RunDir

    cfg = FindConfig(model="lenet300", dataset="digits", rounds=2, rate=0.2,
                     train=TrainConfig(epochs=2, batch_size=64))
    saved = cfg.to_dict()
    assert "adversarial" not in saved["train"]
    (tmp_path / "hparams.json").write_text(json.dumps(saved))
    RunDir(tmp_path).start(cfg)  # raises on a mismatch
    adversarial = FindConfig.from_dict(saved)
    adversarial.train.adversarial = {"kind": "pgd", "eps": 0.1, "steps": 2}
    with pytest.raises(Exception, match="other settings"):
        RunDir(tmp_path).start(adversarial)
