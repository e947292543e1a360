"""Worker processes for the stages that split their work over both cores.

Spawned, never forked: the process that runs a stage also runs Dagster's threads, and a fork
would copy their locks in whatever state they were. A spawned worker imports the code its task
needs before its first row (~0.5 s for the export code, two at once on two cores).

Where one process runs every stage (the ``distill`` command), ``warm_up`` starts the workers
before the stages, so that import overlaps Dagster's start-up. Each stage then borrows them
(``borrowed``) and leaves them running for the next one; the last user, the firewall checks,
takes them (``taken``) and joins them. Joined children's CPU time is counted with the process
that started them (what the benchmark reports) and their memory is given back.

Where there are no warm workers (a run launched from the UI executes each step in its own
process), a stage starts its own and joins them when it ends.
"""

import contextlib
import importlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

MAX_WORKERS = 2  # this machine's cores; a stage that splits in two runs one half in the caller
_warm: ProcessPoolExecutor | None = None


def _spawned(count: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"))


def _ready(modules: tuple[str, ...]) -> None:
    """A worker's first task: import what the stages' tasks will need."""
    for module in modules:
        importlib.import_module(module)


def warm_up(*modules: str) -> None:
    """Start the workers now for the stages to come in this process, importing ``modules``
    in each. Idempotent."""
    global _warm
    if _warm is None:
        _warm = _spawned(MAX_WORKERS)
        for _ in range(MAX_WORKERS):
            _warm.submit(_ready, modules)  # one process is started per task while none is idle


@contextlib.contextmanager
def borrowed(count: int = 1) -> Iterator[ProcessPoolExecutor]:
    """Workers for one stage: the warm ones, left running for the next stage; else ``count``
    new ones, joined when the stage ends (their CPU then counts as the caller's)."""
    global _warm
    pool = _warm
    if pool is None:
        with _spawned(count) as fresh:
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


def taken(count: int) -> ProcessPoolExecutor:
    """The warm workers, now the caller's to join (``with``), else ``count`` new ones."""
    global _warm
    pool, _warm = _warm, None
    return pool if pool is not None else _spawned(count)
