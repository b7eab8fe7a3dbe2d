"""The README as a newcomer runs it: its commands exist with the flags it shows, its Python
blocks define what they use, and (slow) the CLI flow and the Python blocks run as written,
top to bottom, in one empty folder."""

from __future__ import annotations

import ast
import builtins
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def cli_lines() -> list[list[str]]:
    """Every ``ticketmark ...`` command of the bash blocks, continuation lines joined."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            code = line.split(" #")[0].strip().rstrip("&").strip()
            for part in re.split(r"&&|;", code):
                if part.strip().startswith("ticketmark "):
                    out.append(shlex.split(part.strip())[1:])
    return out


def test_every_readme_command_and_flag_exists():
    from typer.core import TyperGroup
    from typer.main import get_command

    from ticketmark.cli.app import app

    lines = cli_lines()
    assert len(lines) >= 20
    for words in lines:
        cmd = get_command(app)
        rest = list(words)
        top = {opt for p in cmd.params for opt in p.opts}
        while rest and rest[0] in top:  # global options before the command
            rest.pop(0)
        while isinstance(cmd, TyperGroup) and rest and not rest[0].startswith("-"):
            assert rest[0] in cmd.commands, f"no command {rest[0]!r}: ticketmark {words}"
            cmd = cmd.commands[rest.pop(0)]
        known = {opt for p in cmd.params for opt in [*p.opts, *p.secondary_opts]}
        known |= {opt for p in get_command(app).params for opt in p.opts}  # --threads
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"{word} unknown: ticketmark {words}"


def _undefined(source: str) -> set[str]:
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load)} - bound


def test_readme_python_blocks_define_what_they_use():
    found = blocks("python")
    assert len(found) >= 2
    for block in found:
        assert not _undefined(block), (_undefined(block), block)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_readme_runs_as_written(tmp_path):
    """The CLI flow ("From zero to a verdict"), then every Python block, in one folder.

    The only change: the server's port 8080 becomes a free one, so that a run beside
    another (or a server already on 8080) cannot answer in its place.
    """
    flow = next(b for b in blocks("bash") if "# 1. Find a ticket" in b)
    port = str(_free_port())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "COLUMNS": "200"}
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", flow.replace("8080", port)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    out = res.stdout
    assert "locked with ewp" in out and "unlocked: restored" in out
    verdicts = [ln for ln in out.splitlines() if re.match(r"(signature|trigger): ", ln)]
    assert verdicts == [v for v in verdicts if ": OWNED" in v] and len(verdicts) == 2, out
    for block in blocks("python"):
        res = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=3600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "OWNED" in res.stdout and "NOT OWNED" not in res.stdout, res.stdout
