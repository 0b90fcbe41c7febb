"""CPU threads for generation: how many, and how idle threads wait (`stage generate --threads`).

Two choices keep a CPU generation steady when another process is busy on the machine
(benchmarks/busy.py measures it, idle against busy):

- **Wait policy.** OpenMP's default lets a thread that finished its share of an operation spin
  for a while before it sleeps (libgomp: 300,000 spins). Next to a busy process the spinning
  threads compete with it for the cores, and every operation waits for its slowest thread (issue
  11 reports a tiny-model step going from 1.4 ms to 54 ms beside one busy loop; on the 2-core build
  machine beside a training job, 179 ms per step with two spinning threads against 4 ms with one,
  benchmarks/README.md). `use_passive_wait()` sets `OMP_WAIT_POLICY=PASSIVE` (sleep at
  once) unless the user set it. The OpenMP runtime reads it once, when torch is imported, so the
  `stage` command calls it before anything imports torch; later calls change nothing.
- **Thread count.** `default_threads`: 1 for models under `SMALL_MODEL_PARAMETERS` (tiny, the
  STAGE-mini models): their steps are many small operations, for which a second thread costs
  more in hand-offs than it saves, and a single thread never waits on a preempted partner.
  Larger models (musicgen-small and up) get one thread per physical core but one: their decode
  step streams the weights, which more cores speed up, and the core left free keeps a busy
  neighbour off the cores the threads wait on. On the 2-core build machine (musicgen-small
  shapes, 2 s + 2 s, CFG 3) one thread took 19.4 s idle and 1.75x that beside a busy loop; two
  took 20.2 s idle (the step is memory-bound) and 2.18x beside it (benchmarks/README.md, busy.py). `OMP_NUM_THREADS`, when set, is kept
  as the default; `--threads N` overrides both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from stage.errors import StageError

WAIT_POLICY = "PASSIVE"
SMALL_MODEL_PARAMETERS = 50_000_000  # tiny: 1.1 M, STAGE-mini: ~8 M; musicgen-small: 420 M


def use_passive_wait() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE unless it is set already; effective only before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def check_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """A user's thread count: None (the default) or an integer >= 1; StageError otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StageError(f"{flag} must be a whole number >= 1, got {threads!r}")
    return threads


def physical_cores() -> int:
    """Physical cores this process may run on: the usable CPUs, divided by the SMT siblings per
    core when /proc/cpuinfo says so (Linux); at least 1."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = os.cpu_count() or 1
    siblings = cores = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "siblings":
                    siblings = int(value)
                elif key.strip() == "cpu cores":
                    cores = int(value)
                if siblings and cores:
                    break
    except (OSError, ValueError):
        pass
    per_core = siblings // cores if siblings and cores and siblings >= cores else 1
    return max(1, usable // per_core)


def default_threads(num_parameters: int) -> int:
    """The thread count for generating with a model of `num_parameters` (see the module docstring)."""
    return 1 if num_parameters < SMALL_MODEL_PARAMETERS else max(1, physical_cores() - 1)


@contextmanager
def generation_threads(threads: int | None, num_parameters: int) -> Iterator[int]:
    """Run a block with torch's intra-op thread count set for generation and restore it after
    (for callers in one process, such as the tests). threads: the user's --threads, or None for
    `default_threads` (or OMP_NUM_THREADS when set). Yields the count in use."""
    import torch

    before = torch.get_num_threads()
    threads = check_threads(threads)
    if threads is None:
        threads = before if os.environ.get("OMP_NUM_THREADS") else default_threads(num_parameters)
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
