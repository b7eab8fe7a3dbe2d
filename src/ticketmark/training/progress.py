"""Progress on stderr, quiet when asked and on non-main ranks.

On a terminal, a rich progress bar redrawn in place. Anywhere else (a log file, a pipe, CI)
a redrawn bar cannot work: rich would print only its last frame, cut to 80 columns. There
``progress_bar`` gives ``PlainProgress`` instead, which writes one whole plain line per
quarter of each task (and at least every ``PlainProgress.every`` seconds of a long one),
never cut to a width.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)
    printed: int = 0  # the last quarter written
    last: float = field(default_factory=time.monotonic)  # when the last line was written


class PlainProgress:
    """The part of ``rich.progress.Progress`` ticketmark uses, as plain log lines:
    ``train resnet20s: 30% (90/300) epoch 2/5 loss 0.321 [0:00:07]``."""

    def __init__(self, file: IO[str] | None = None, steps: int = 4, every: float = 30.0
                 ) -> None:
        self.file = file
        self.steps = steps
        self.every = every
        self.tasks: dict[int, _Task] = {}

    def add_task(self, description: str, total: float | None = 100.0, **fields: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, total, fields=dict(fields))
        return task_id

    def update(self, task_id: int, *, advance: float | None = None,
               completed: float | None = None, total: float | None = None,
               description: str | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        task.fields.update(fields)
        if task.total:
            step = int(self.steps * min(task.completed / task.total, 1.0))
            now = time.monotonic()
            if step > task.printed or now - task.last >= self.every:
                task.printed, task.last = step, now
                self._line(task)

    def advance(self, task_id: int, advance: float = 1.0) -> None:
        self.update(task_id, advance=advance)

    def _line(self, task: _Task) -> None:
        elapsed = int(time.monotonic() - task.start)
        done = f"{int(task.completed)}/{int(task.total)}" if task.total else ""
        pct = f"{100 * task.completed / task.total:.0f}% " if task.total else ""
        status = str(task.fields.get("status", "")).strip()
        text = (f"{task.description}: {pct}({done})" + (f" {status}" if status else "")
                + f" [{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}]")
        out = self.file if self.file is not None else sys.stderr
        print(text, file=out, flush=True)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | PlainProgress]:
    if enabled and not console.is_terminal:
        yield PlainProgress(console.file)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress
