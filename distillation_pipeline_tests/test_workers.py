"""lib/workers: warm workers are lent to stage after stage, joined by their last user, and end
with a caller that was killed."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillation_pipeline.lib import workers


def _pid() -> int:
    return os.getpid()


def _fail() -> None:
    raise ValueError("a stage's half failed")


@pytest.fixture(autouse=True)
def _no_warm_workers_left():
    yield
    pool, workers._warm = workers._warm, None  # noqa: SLF001
    if pool is not None:
        pool.shutdown(wait=True)


def test_without_warm_workers_a_stage_starts_its_own_and_joins_them() -> None:
    with workers.borrowed() as pool:
        assert pool.submit(_pid).result() != os.getpid()
    assert workers._warm is None  # noqa: SLF001
    with pytest.raises(RuntimeError, match="shutdown"):  # joined when the stage ended
        pool.submit(_pid)


def test_warm_workers_are_lent_to_each_stage_then_taken_by_the_last() -> None:
    workers.warm_up()
    warm = workers._warm  # noqa: SLF001
    with workers.borrowed() as first:
        first_pid = first.submit(_pid).result()
    with workers.borrowed() as second:
        assert second is warm  # the same processes, still running
        assert {first_pid, second.submit(_pid).result()} <= set(warm._processes)  # noqa: SLF001
    with workers.taken(2) as last:
        assert last is warm
        last.submit(_pid).result()
    assert workers._warm is None  # noqa: SLF001
    with pytest.raises(RuntimeError, match="shutdown"):
        warm.submit(_pid)


def test_a_stage_that_fails_with_warm_workers_leaves_none_for_the_next() -> None:
    workers.warm_up()
    warm = workers._warm  # noqa: SLF001
    with pytest.raises(ValueError, match="failed"), workers.borrowed() as pool:
        pool.submit(_fail).result()
    assert workers._warm is None  # noqa: SLF001
    with pytest.raises(RuntimeError, match="shutdown"):
        warm.submit(_pid)


def test_usable_cores_follows_the_override_else_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.CORES_ENV, "1")
    assert workers.usable_cores() == 1 and not workers.can_split()
    monkeypatch.setenv(workers.CORES_ENV, "4")
    assert workers.usable_cores() == 4 and workers.can_split()
    monkeypatch.setenv(workers.CORES_ENV, "two")
    with pytest.raises(ValueError, match="DISTILL_CORES='two'"):
        workers.usable_cores()
    monkeypatch.delenv(workers.CORES_ENV)
    assert 1 <= workers.usable_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("contents", "expected"),
    [(["150000 100000"], 2), (["max 100000"], None), (["50000 100000"], 1), (["-1", "100000"], None), (["200000", "100000"], 2)],
)
def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch: pytest.MonkeyPatch, contents: list[str], expected) -> None:
    files = []
    for i, text in enumerate(contents):
        (tmp_path / f"f{i}").write_text(text + "\n")
        files.append(str(tmp_path / f"f{i}"))
    monkeypatch.setattr(workers, "_QUOTA_FILES", (tuple(files),))
    assert workers._quota_cores() == expected  # noqa: SLF001


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from distillation_pipeline.lib import workers
started = Path(sys.argv[1])
with workers.borrowed(count=1) as pool:
    pool.submit(started.touch)
    pool.submit(time.sleep, 120)  # a long task, still running when this process is killed
    print(*pool._processes, flush=True)
    time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # exited; a zombie waits for a reaper that may never come here


def test_a_worker_ends_soon_after_its_caller_is_killed_even_in_the_middle_of_a_task(tmp_path: Path) -> None:
    started = tmp_path / "task-started"
    caller = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(started)], stdout=subprocess.PIPE, text=True)
    try:
        (worker,) = map(int, caller.stdout.readline().split())  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the worker never ran its first task"
        time.sleep(0.3)  # the long task is running
        assert not _gone(worker)
    finally:
        caller.kill()
        caller.wait()
    deadline = time.monotonic() + 10 * workers.ORPHAN_POLL_SECONDS + 5
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker), "the worker outlived its killed caller"
