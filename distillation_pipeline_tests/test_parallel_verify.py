"""exports/parallel_verify: checks side by side give what checks in this process give."""

from pathlib import Path

import pytest

from distillation_pipeline.exports.parallel_verify import VerifyJob, run_job, sides, verify_side_by_side
from distillation_pipeline.lib import workers
from distillation_pipeline.lib.workers import warm_up
from distillation_pipeline_tests.test_exports_incremental import export_all, substrate


def test_side_by_side_outcomes_equal_in_process_ones_with_or_without_warm_workers(tmp_path: Path) -> None:
    layout = substrate(tmp_path / "root")
    export_all(layout)
    jobs = [VerifyJob(root=str(layout.root), dataset=d, dry_run=True) for d in ("rag", "sft", "preference")]
    expected = {job.dataset: run_job(job) for job in jobs}
    assert verify_side_by_side(jobs) == expected  # workers started for the checks
    warm_up()
    warm = workers._warm  # noqa: SLF001
    warm_up()  # idempotent: the same workers
    assert warm is not None and workers._warm is warm  # noqa: SLF001
    assert verify_side_by_side(jobs) == expected
    assert workers._warm is None  # noqa: SLF001 (used once, then joined)
    with pytest.raises(RuntimeError, match="shutdown"):  # and shut down (its workers joined)
        warm.submit(print)


@pytest.mark.parametrize(
    ("sizes", "worker", "caller"),
    [
        ({"rag": 578, "sft": 342, "preference": 169}, ["rag"], ["sft", "preference"]),  # the 1M run's MB
        ({"rag": 100, "sft": 342, "preference": 300}, ["sft"], ["preference", "rag"]),
        ({"rag": 10, "sft": 10, "preference": 10}, ["rag", "preference"], ["sft"]),
    ],
)
def test_the_checks_split_their_bytes_between_the_worker_and_the_caller(sizes, worker, caller) -> None:
    jobs = [VerifyJob(root=".", dataset=d) for d in ("rag", "sft", "preference")]
    there, here = sides(jobs, sizes)
    assert [job.dataset for job in there] == worker
    assert [job.dataset for job in here] == caller
