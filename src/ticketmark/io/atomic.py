"""Write to a temporary file in the target folder, then rename: no half-written outputs.

``atomic_write_group`` writes several files that belong together (a ticket's weights and
its sidecar): every temporary file is written and synced before the first rename, so a
failure while writing leaves the old files untouched, and the only window left is between
two back-to-back renames (which readers detect: the sidecar records the weights' SHA-256).
A process killed mid-write leaves a ``.NAME.XXXX.tmp`` file; ``remove_stale_temps`` deletes
such leftovers on the next write of the same target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

STALE_AFTER_S = 60.0  # a temp file untouched this long belongs to no live writer


def remove_stale_temps(path: str | Path, older_than: float = STALE_AFTER_S) -> list[Path]:
    """Delete ``.NAME.*.tmp`` leftovers of ``path`` that no writer touched for a while."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):  # another process may remove it first
            if tmp.is_file() and now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
    return removed


def _stage(path: Path, data: bytes) -> Path:
    """Write ``data`` to a synced temp file beside ``path``; return the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_group(files: dict[Path, bytes]) -> None:
    """Write all ``files`` (path -> bytes): stage every one, then rename them in order."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            remove_stale_temps(path)
            staged.append((_stage(Path(path), data), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_group({Path(path): data})


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
