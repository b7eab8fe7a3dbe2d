"""What every verifier returns: a verdict a person can read and a machine can check.

``status`` is one of OWNED, NOT OWNED, COULD NOT VERIFY. The evidence dict carries the
numbers behind it (p-values, bit agreement, decoded text, matches) and goes verbatim into
the JSON report; ``pictures`` are paths of PNGs written next to that report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OWNED = "OWNED"
NOT_OWNED = "NOT OWNED"
UNVERIFIABLE = "COULD NOT VERIFY"


@dataclass
class VerifyOptions:
    """Options of ``ticketmark verify``; each scheme reads the ones it needs."""

    reference: Path | None = None  # claimant's reference ticket (signature: re-align channels)
    reveal: Path | None = None  # the owner's reveal (trigger reveal file/folder; signature)
    null_models: Path | None = None  # trigger: models known to be unmarked (file or folder)
    search: bool = False  # signature: search every layer/offset/orientation
    threshold: float | None = None  # p-value threshold (scheme default when None)
    full_evidence: bool = False  # signature: run the search null even when the tag decodes
    report_dir: Path | None = None  # where JSON report and pictures go
    max_queries: int = 10_000  # endpoint: cap on queried inputs
    timeout: float = 10.0  # endpoint: seconds per socket operation
    deadline: float = 300.0  # endpoint: seconds for all queries together, retries included
    batch_size: int = 50  # endpoint: inputs per request
    adapter: Any = None  # endpoint: trigger.adapter.InputAdapter (protocol, input layout)


@dataclass
class Verdict:
    scheme: str
    status: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    p_value: float | None = None
    pictures: list[str] = field(default_factory=list)

    @property
    def owned(self) -> bool:
        return self.status == OWNED

    @property
    def exit_code(self) -> int:
        return 0 if self.owned else 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
