"""lib/workers: warm workers are lent to stage after stage, and joined by their last user."""

import os

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
