"""Find QR codes already drawn into a ticket's connectivity, so embedding leaves them alone.

Without this, the placement search run on a ticket that already carries a signature lands
exactly on it: the old code's finder and timing patterns agree with every new code, so
the old block is the best fit there is. Overwriting it would erase the first owner's
evidence, and the dispute rule ("whose credential is in whose reference") then has
nothing to compare. Drawing beside it in the same layer is no better: keeping the layer's
count of weights moves entries, some of them inside the old block (seen in a demo run).
So a layer that carries a code is not signed again. An attacker who edits the code can
still overwrite a block; the tool itself will not do it for them.

A block counts as a code when at least ``THRESHOLD`` of its finder, separator and timing
modules agree with a QR code of that size. Those modules are about half dark, so a random
connectivity agrees on about half of them whatever its density; 85% of the 202 modules of
a version-1 code is about ten standard deviations out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ticketmark.ownership.signature import placement, qr

THRESHOLD = 0.85


def fixed_pattern(version: int) -> tuple[np.ndarray, np.ndarray]:
    """(modules, weights): the finder/separator/timing modules every code of ``version`` has."""
    modules = qr.make_code("0", mask=0, version=version).modules
    n = modules.shape[0]
    w = np.zeros((n, n), dtype=bool)
    w[:8, :8] = w[:8, n - 8:] = w[n - 8:, :8] = True  # finders with their separators
    w[6, 8:n - 8] = w[8:n - 8, 6] = True  # timing lines
    return modules, w


def existing_codes(conns: Mapping[str, torch.Tensor], version: int,
                   threshold: float = THRESHOLD) -> dict[str, torch.Tensor]:
    """Per layer, the offsets (bool, valid-offset shape) where a code already sits."""
    modules, w = fixed_pattern(version)
    n = modules.shape[0]
    codes = placement.oriented_stack(modules)
    weights = placement.oriented_stack(w)
    need = threshold * float(w.sum())
    found = {}
    for name, conn in conns.items():
        if conn.shape[0] < n or conn.shape[1] < n:
            continue
        maps = placement.masked_agreement_maps(conn, codes, weights)
        found[name] = (maps >= need).any(dim=0)
    return found


def describe(found: Mapping[str, torch.Tensor], limit: int = 5) -> list[dict[str, object]]:
    """The first few detected blocks as {layer, row, col}, for reports and warnings."""
    out: list[dict[str, object]] = []
    for name, starts in found.items():
        for r, c in torch.nonzero(starts).tolist():
            out.append({"layer": name, "row": r, "col": c})
            if len(out) >= limit:
                return out
    return out
