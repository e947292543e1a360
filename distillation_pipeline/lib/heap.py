"""Giving the memory a finished piece of work freed back to the operating system.

A stage's per-row structures (collect's seen-id sets, score's parent index, the export's id
index, the checks' row arrays) are freed when it ends, but glibc keeps the freed pages of its
heap for the process's next allocations. Each process's resident memory then stays at the
high-water mark of the largest piece of work it ever ran, and the stages' processes, each
holding its own, add up: at 1M rows the pipeline's peak was three such marks at once (the
calling process's from collect, score and the export, the workers' from the checks).

``malloc_trim(0)`` returns the free pages anywhere in the heap, not only at its top. It is
glibc's; elsewhere (musl, macOS) this does nothing.
"""

import ctypes
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library the interpreter links
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> None:
    """Hand the heap's free pages back to the OS (a few milliseconds); call it where a large
    piece of work has just ended and its structures are gone."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def call_releasing(work: Callable[..., R], args: tuple, kwargs: dict) -> R:
    """``work(*args, **kwargs)``, then ``release_free_heap`` however it ended. A module-level
    function, so a worker pool can send it with its task (``lib/workers``)."""
    try:
        return work(*args, **kwargs)
    finally:
        release_free_heap()


def releasing_heap(work: Callable[P, R]) -> Callable[P, R]:
    """``work`` through ``call_releasing``: for a stage's entry point, and for a piece of work
    that runs in the calling process between larger ones."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return call_releasing(work, args, kwargs)

    return run
