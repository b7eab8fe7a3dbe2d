"""Write to a temporary file in the target folder, then rename: no half-written outputs.

Every file ticketmark writes goes through here, so this is also where its permissions are
decided, once: a *public* artifact (ticket, claim, report, public key, picture) is
world-readable (0644), a *secret* (private key, lock key, trigger seed) is owner-only
(0600) from the moment it exists. A user's umask can only narrow these, never widen them.
"""

from __future__ import annotations

import json
import os
import tempfile
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


def atomic_write_bytes(path: str | Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``secret`` files are readable by the owner only.

    The temporary file is created 0600 and gets its final mode before the rename, so a
    secret is never readable by others, not even for an instant.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), file_mode(secret))
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, secret: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), secret=secret)


def atomic_write_json(path: str | Path, obj: Any, sort_keys: bool = True, *,
                      secret: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n",
                      secret=secret)
