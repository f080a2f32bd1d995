"""How many torch threads a process should use, and setting them: the caller's choice, made once.

Engines never set thread counts themselves: the CLI (``run``, ``eval``, ``compile``) and the weight
optimizers call `set_torch_threads` once, before the work starts. Why not every core: torch's
intra-op threads meet at every operation, so one busy core holds all of them back. With a CPU-bound
neighbour on one of two cores, two threads trained the tagger at 1.6 steps/s against 6.5 quiet
(four-fold), and the local engine with two threads generated about 20x slower than with one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

THREADS_ENV = "MEDPROG_TORCH_THREADS"
"""Environment variable that fixes the torch thread count when no explicit count is given."""


def busy_cpus(sample_s: float) -> float:
    """CPUs kept busy by any process over ``sample_s`` seconds (from /proc/stat)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = read()
    time.sleep(sample_s)
    total1, idle1 = read()
    if total1 <= total0:
        return 0.0
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def idle_cpus(sample_s: float = 0.5) -> int:
    """The CPUs this process may use less those busy now (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = busy_cpus(sample_s)
    except (OSError, ValueError, IndexError):
        return cpus
    return max(1, min(cpus, round(cpus - busy)))


def torch_threads(threads: int | None = None) -> int:
    """The thread count to use: ``threads``, else ``$MEDPROG_TORCH_THREADS``, else the idle CPUs."""
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"torch threads must be a positive integer, got {threads!r}")
        return threads
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"${THREADS_ENV}={env!r}: expected a positive integer")
        return int(env)
    return idle_cpus()


def set_torch_threads(threads: int | None = None, log: Callable[[str], None] | None = None) -> int:
    """Set torch's intra-op thread count (see `torch_threads`) and return it."""
    import torch

    n = torch_threads(threads)
    torch.set_num_threads(n)
    if log is not None:
        log(f"using {n} torch thread(s)")
    return n
