"""Write to a temporary file in the target folder, then rename: no half-written outputs.

Every file ticketmark writes goes through here, so this is also where its permissions are
decided, once: a *public* artifact (ticket, claim, report, public key, picture) is
world-readable (0644), a *secret* (private key, lock key, trigger seed) is owner-only
(0600) from the moment it exists. A user's umask can only narrow these, never widen them.

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

PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def file_mode(secret: bool) -> int:
    """0600 for secrets; 0644 for public artifacts, narrowed by the umask."""
    return SECRET_MODE if secret else PUBLIC_MODE & ~_umask()


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


def _stage(path: Path, data: bytes, secret: bool = False) -> Path:
    """Write ``data`` to a synced temp file beside ``path``; return the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), file_mode(secret))
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_group(files: dict[Path, bytes], *, secret: bool = False) -> None:
    """Write all ``files`` (path -> bytes): stage every one, then rename them in order.

    Each temporary file gets its final mode before any rename, so a secret is never
    readable by others, not even for an instant.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            remove_stale_temps(path)
            staged.append((_stage(Path(path), data, secret), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``secret`` files are readable by the owner only."""
    atomic_write_group({Path(path): data}, secret=secret)


def atomic_write_text(path: str | Path, text: str, *, secret: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), secret=secret)


def atomic_write_json(path: str | Path, obj: Any, sort_keys: bool = True, *,
                      secret: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n",
                      secret=secret)
