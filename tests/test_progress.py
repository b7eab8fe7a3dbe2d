"""Progress off a terminal: whole plain lines (a log file keeps every one), never a bar."""

from __future__ import annotations

import io

from rich.console import Console

from ticketmark.training import progress as prog


def test_progress_in_a_log_file_is_plain_whole_lines(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(prog, "console", Console(file=log, force_terminal=False, width=80))
    desc = "round 3 (78.4% sparse) of a resnet20s on digits, a description over 80 columns"
    with prog.progress_bar(True) as bar:
        assert isinstance(bar, prog.PlainProgress)
        task = bar.add_task(desc, total=40, status="")
        for step in range(40):
            bar.update(task, advance=1, status=f"epoch {step // 10 + 1}/4 loss 0.123")
    lines = log.getvalue().splitlines()
    assert len(lines) == 4, lines  # one a quarter
    assert all(ln.startswith(desc + ": ") for ln in lines)  # never cut to the width
    assert lines[-1].startswith(desc + ": 100% (40/40) epoch 4/4 loss 0.123 [0:00:")
    assert "━" not in log.getvalue() and "\r" not in log.getvalue()  # no bar, no redraw


def test_long_tasks_write_a_line_at_least_every_so_often():
    log = io.StringIO()
    bar = prog.PlainProgress(log, every=0.0)  # every update is "long enough ago"
    task = bar.add_task("t", total=1000, status="")
    for _ in range(5):
        bar.advance(task)
    assert len(log.getvalue().splitlines()) == 5


def test_a_terminal_still_gets_the_rich_bar_and_quiet_gets_nothing(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(prog, "console", Console(file=out, force_terminal=True, width=100))
    with prog.progress_bar(True) as bar:
        assert not isinstance(bar, prog.PlainProgress)
        bar.update(bar.add_task("x", total=2, status=""), advance=2)
    assert "2/2" in out.getvalue()
    monkeypatch.setattr(prog, "console", Console(file=out, force_terminal=False))
    out.truncate(0)
    with prog.progress_bar(False) as bar:
        bar.update(bar.add_task("quiet", total=2, status=""), advance=2)
    assert "quiet" not in out.getvalue()
