"""Deterministic seeding: the same seed gives the same weights and batches on one device."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def _deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import cost.

    The public call also sets ``torch._inductor.config.deterministic``, and importing that
    module pulls in inductor and dynamo: 2-3 s of CPU per process (measured in the demo's
    profile: 3.1 of its 89 profiled seconds), paid by every command that trains. ticketmark
    never compiles, so while inductor is not loaded only the eager flag matters and is set
    directly; once something has imported inductor, the public call costs nothing more and
    keeps its setting in step.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if "torch._inductor.config" in sys.modules or setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)
    _no_uninitialized_fill()


def _no_uninitialized_fill() -> None:
    """Stop deterministic mode from filling every fresh tensor with NaN.

    With deterministic algorithms on, torch by default writes NaN into the memory of every
    ``torch.empty`` (and every op's fresh output) so that a kernel reading memory it never
    wrote gives a reproducible NaN rather than garbage. That is a debugging aid: no result
    of a kernel that writes its whole output depends on it, yet the fill ran about 450 times
    per ResNet-20s training step, 5% of the step's CPU (``aten::fill_`` in the torch
    profile of ``train`` on digits). Ticketmark's determinism comes from seeds and
    deterministic kernels, which this leaves on.
    """
    setter = getattr(torch._C, "_set_deterministic_fill_uninitialized_memory", None)
    if setter is not None:
        setter(False)


def seed_everything(seed: int) -> None:
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    _deterministic_algorithms()
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
