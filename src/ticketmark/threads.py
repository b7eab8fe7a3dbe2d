"""How many threads torch's CPU kernels use: one, unless the user asks for more.

ticketmark's own work is small tensors: 8x8 to 32x32 images through ResNet-20s/conv nets,
FFT correlations of 21x21 codes, per-layer statistics. At that size a second intra-op
thread buys little, and on a busy machine it can cost a great deal: an OpenMP worker
waiting for a partner the scheduler has given to someone else spins. On the project's
shared 2-core machine a resnet20s training child with two threads burnt 113 s of CPU in
38 minutes without finishing what one thread did in 2 min 47 s of wall
(docs/performance.md; an idle-machine comparison is still to be made with
benchmarks/bench_threads.py). One thread is also the same number on every machine, so a
run's floating-point reductions do not change with the core count.

Order of precedence: ``--threads N`` on the command line, then ``TICKETMARK_THREADS``, then
an ``OMP_NUM_THREADS`` the user set, then 1. ``0`` means every core this process may use
(torch's own default), for large models on a machine of one's own; a count above the
cores is capped at the cores.
"""

from __future__ import annotations

import os
import sys

DEFAULT_THREADS = 1
ENV = "TICKETMARK_THREADS"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(requested: int | None) -> int:
    """The thread count the precedence above gives (``0`` resolves to every core)."""
    if requested is None:
        text = os.environ.get(ENV) or os.environ.get("OMP_NUM_THREADS")
        try:
            requested = int(text) if text else DEFAULT_THREADS
        except ValueError:
            requested = DEFAULT_THREADS
    if requested < 0:
        requested = DEFAULT_THREADS
    cores = available_cores()
    # torch itself caps OMP_NUM_THREADS at the core count; more threads than cores only
    # adds waiting, so ask for no more.
    return cores if requested == 0 else min(requested, cores)


def use_threads(requested: int | None) -> int:
    """Apply the policy once, before the work starts; returns the thread count.

    torch reads ``OMP_NUM_THREADS`` when it is first imported, so setting the variable
    here also covers a torch imported later by the command (and worker subprocesses); if
    torch is already loaded, it is told directly.
    """
    n = resolve_threads(requested)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
