"""lib/heap: the memory a finished piece of work freed goes back to the OS, in the calling
process (``releasing_heap``) and in the stages' workers (after every task)."""

import ctypes
from pathlib import Path

import pytest

from distillation_pipeline.lib import workers
from distillation_pipeline.lib.heap import releasing_heap

pytestmark = pytest.mark.skipif(
    getattr(ctypes.CDLL(None), "malloc_trim", None) is None, reason="malloc_trim is glibc's; elsewhere nothing is released"
)

MB = 1 << 20
_still_used: list[bytes] = []  # what a piece of work leaves alive, scattered through the heap


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _work_that_frees_most_of_what_it_used(megabytes: int = 192) -> int:
    """Fill ~``megabytes`` of the C heap with 2 KiB blocks (under glibc's mmap threshold, over
    pymalloc's limit), keep one in 64 alive and free the rest: the free space then lies between
    live blocks, where ``free`` alone never hands it back. Returns the RSS at the peak."""
    blocks = [bytes([i & 0xFF]) * 2048 for i in range(megabytes * MB // 2048)]  # written: resident
    peak = _rss()
    _still_used.extend(blocks[::64])
    del blocks
    return peak


@pytest.fixture(autouse=True)
def _forget():
    yield
    _still_used.clear()
    pool, workers._warm = workers._warm, None  # noqa: SLF001
    if pool is not None:
        pool.shutdown(wait=True)


def test_freed_heap_stays_resident_until_released_then_goes_back() -> None:
    before = _rss()
    peak = _work_that_frees_most_of_what_it_used()
    assert peak > before + 150 * MB
    # what this module is for: free() kept it, though almost nothing of it is used
    assert _rss() > before + 120 * MB
    releasing_heap(lambda: None)()
    assert _rss() < before + 40 * MB


def test_a_piece_of_work_that_fails_still_releases_what_it_freed() -> None:
    def fails() -> None:
        _work_that_frees_most_of_what_it_used()
        raise ValueError("the stage failed")

    before = _rss()
    with pytest.raises(ValueError, match="failed"):
        releasing_heap(fails)()
    assert _rss() < before + 40 * MB


def _rss_now() -> int:
    return _rss()


def test_a_worker_gives_back_what_each_task_freed() -> None:
    # one new worker (no warm ones): every task below runs in the same process
    with workers.borrowed(count=1) as pool:
        before = pool.submit(_rss_now).result()
        peak = pool.submit(_work_that_frees_most_of_what_it_used).result()
        after = pool.submit(_rss_now).result()
    assert peak > before + 150 * MB
    assert after < before + 40 * MB  # not the task's high-water mark, kept until the next stage
