"""The worker process the stages split their work with, to use both cores.

Spawned, never forked: the process that runs a stage also runs Dagster's threads, and a fork
would copy their locks in whatever state they were. A spawned worker imports the code its task
needs before its first row (~0.5 s for the export code).

Every stage that splits runs one share in the calling process and the other in one worker, so
one worker keeps two cores busy. Where one process runs every stage (the ``distill`` command),
``warm_up`` starts it before the stages, so that its import overlaps Dagster's start-up. Each
stage then borrows it (``borrowed``) and leaves it running for the next one; the last user, the
firewall checks, takes it (``taken``) and joins it. A joined child's CPU time is counted with
the process that started it (what the benchmark reports) and its memory is given back.

Where there are no warm workers (a run launched from the UI executes each step in its own
process), a stage starts its own and joins them when it ends.

Splitting costs CPU (each half reads its inputs itself), so a stage splits only where a second
core is there to take it (``can_split``): the process's CPU affinity, capped by a cgroup CPU
quota (a container's limit, which the affinity does not show), or ``DISTILL_CORES``.
"""

import contextlib
import importlib
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from distillation_pipeline.lib.heap import call_releasing

# A stage that splits runs one share in the caller, the other here. (Round 5 kept a second warm
# worker for the checks alone: idle through every stage, it held ~64 MB at the 1M run's peak.)
WARM_WORKERS = 1
_warm: ProcessPoolExecutor | None = None


CORES_ENV = "DISTILL_CORES"
# cgroup v2, then v1: "<quota> <period>" or "max <period>"; quota and period (-1: no limit)
_QUOTA_FILES = (("/sys/fs/cgroup/cpu.max",), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _quota_cores() -> int | None:
    """The cgroup CPU quota in whole cores (rounded up), None without one."""
    for files in _QUOTA_FILES:
        try:
            values = " ".join(Path(name).read_text().strip() for name in files).split()
        except OSError:
            continue
        if len(values) != 2 or values[0] in ("max", "-1"):
            return None
        try:
            quota, period = int(values[0]), int(values[1])
        except ValueError:
            return None
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    return None


def usable_cores() -> int:
    """How many cores this process may keep busy: ``DISTILL_CORES`` if set, else its CPU
    affinity capped by the cgroup quota."""
    override = os.environ.get(CORES_ENV, "").strip()
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            raise ValueError(f"{CORES_ENV}={override!r}: expected a whole number of cores") from None
    cores = len(os.sched_getaffinity(0))
    quota = _quota_cores()
    return min(cores, quota) if quota is not None else cores


def can_split() -> bool:
    """Is there a second core for a stage's other half?"""
    return usable_cores() >= 2


class _Workers(ProcessPoolExecutor):
    """A pool whose workers give back the heap each task freed, so that a worker idle between
    stages (or running a small task) does not hold the largest task's memory meanwhile."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(call_releasing, fn, args, kwargs)


def _spawned(count: int) -> ProcessPoolExecutor:
    return _Workers(
        max_workers=count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_caller,
        initargs=(os.getpid(),),
    )


ORPHAN_POLL_SECONDS = 0.2
EXIT_ORPHANED = 70  # a worker that found the process which started it gone


def _exit_with_caller(caller_pid: int) -> None:
    """Worker start-up: a thread that ends the worker once its caller is gone.

    A caller killed outright (SIGKILL, the OOM killer) cannot stop its workers, and a worker in
    the middle of a task would finish it (up to ~40 s of CPU at 1M rows) beside the next run.
    Whatever it leaves is what a kill leaves: temporaries a later run sweeps, bytes past a
    committed length the next collect cuts (collect also checks ``caller_alive`` before each
    write, since the next run may start within a poll)."""

    def watch() -> None:
        while caller_alive(caller_pid):
            time.sleep(ORPHAN_POLL_SECONDS)
        os._exit(EXIT_ORPHANED)  # no clean-up to run: the caller that would commit is gone

    threading.Thread(target=watch, name="exit-with-caller", daemon=True).start()


def _ready(modules: tuple[str, ...]) -> None:
    """A worker's first task: import what the stages' tasks will need."""
    for module in modules:
        importlib.import_module(module)


def warm_up(*modules: str) -> None:
    """Start the worker now for the stages to come in this process, importing ``modules``.
    Idempotent."""
    global _warm
    if _warm is None:
        _warm = _spawned(WARM_WORKERS)
        for _ in range(WARM_WORKERS):
            _warm.submit(_ready, modules)  # one process is started per task while none is idle


@contextlib.contextmanager
def borrowed(count: int = 1, imports: tuple[str, ...] = ()) -> Iterator[ProcessPoolExecutor]:
    """Workers for one stage: the warm ones, left running for the next stage; else ``count``
    new ones, joined when the stage ends (their CPU then counts as the caller's). New workers
    import ``imports`` at once, while the caller prepares their first task."""
    global _warm
    pool = _warm
    if pool is None:
        with _spawned(count) as fresh:
            for _ in range(count):
                fresh.submit(_ready, imports)
            yield fresh
        return
    try:
        yield pool
    except BaseException:
        # A worker that died breaks its pool, and any error ends the run's use of it: no later
        # stage gets a pool in an unknown state (they start their own).
        _warm = None
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def caller_alive(caller_pid: int) -> bool:
    """In a worker: does the process that gave it its task still live? A worker outlives a
    SIGKILLed caller (it is reparented), and must not write what no one will commit."""
    return os.getpid() == caller_pid or os.getppid() == caller_pid


def taken(count: int) -> ProcessPoolExecutor:
    """The warm workers, now the caller's to join (``with``), else ``count`` new ones."""
    global _warm
    pool, _warm = _warm, None
    return pool if pool is not None else _spawned(count)
