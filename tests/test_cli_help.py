"""``--help`` as a newcomer reads it: commands in the order they are used, grouped, whole."""

from __future__ import annotations

import re

from tests.conftest import run_cli


def _commands(text: str) -> list[str]:
    """Command names in the order ``--help`` lists them (two-space indented rows)."""
    return re.findall(r"^  ([a-z]+)  ", text, flags=re.MULTILINE)


def test_top_level_help_lists_every_command_once_in_workflow_order():
    from typer.main import get_command

    from ticketmark.cli.app import SECTIONS, app

    res = run_cli("--help", env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    listed = _commands(res.stdout)
    registered = set(get_command(app).commands)
    assert sorted(listed) == sorted(registered)  # each exactly once
    assert listed == [n for _, names in SECTIONS for n in names]  # none left "Other"
    assert listed.index("find") < listed.index("embed") < listed.index("verify")
    for title, _ in SECTIONS:
        assert f"\n{title}:\n" in res.stdout
    rows = res.stdout.split("--help")[-1]
    assert "..." not in rows  # no description cut mid-sentence
    assert "fine-tune, prune, quantize, noise," in res.stdout  # attack's, whole


def test_trigger_help_names_its_commands():
    res = run_cli("trigger", "--help")
    assert res.returncode == 0, res.stderr
    first = res.stdout.split("Options:")[0]
    commands = _commands(res.stdout.split("Commands:")[1])
    assert commands == ["embed", "make"]
    assert all(f"{c} (" in first for c in commands), first  # the summary names both
    assert "export," not in first


def test_subcommand_descriptions_are_whole_too():
    for group in ("attack", "lock", "trigger"):
        res = run_cli(group, "--help", env={"COLUMNS": "80"})
        assert res.returncode == 0, res.stderr
        rows = res.stdout.split("Commands:")[1]
        assert "..." not in rows, rows
    text = " ".join(run_cli("attack", "--help").stdout.split())
    assert "without changing the model's outputs." in text  # permute's, to its end
