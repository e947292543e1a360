"""Verify several datasets side by side, at most two at a time.

The firewall re-read is pure CPU per dataset (parse, rescan for credentials and cited paths,
recompute ids; on later runs mostly hashing lines, see ``verified_rows``) and the datasets are
independent, so on a 2-core machine the RAG check (the largest) runs in a worker process while
SFT and preference run in the calling process: the checks take about as long as the RAG check
alone instead of the sum. A single dataset is verified in the calling process.

The workers are ``lib/workers``': warm ones if the stages before borrowed them (the ``distill``
command), else spawned here. The checks are their last user: they take the workers and join
them when done.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillation_pipeline.exports.increments import forget_verified, record_verified
from distillation_pipeline.exports.verified_rows import (
    TableBuilder,
    VerifiedRows,
    binding,
    commit_table,
    forget_table,
    table_path,
)
from distillation_pipeline.exports.verify import Remembered, verify_dataset
from distillation_pipeline.lib.heap import releasing_heap
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.lib.workers import taken

VIOLATION_LIMIT = 10_000


@dataclass(frozen=True)
class VerifyJob:
    """One dataset's check, as plain values a worker process can receive."""

    root: str
    dataset: str
    include_review: bool = False
    include_partial: bool = False
    max_pairs_per_task: int = 5
    trusted: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # path -> verified byte ranges
    export_options: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    remember: bool = True  # use the rows the last pass kept (verified_rows), and keep this pass's

    def check_options(self) -> dict[str, Any]:
        return {"include_review": self.include_review, "include_partial": self.include_partial,
                "max_pairs_per_task": self.max_pairs_per_task}  # fmt: skip


@dataclass(frozen=True)
class VerifyOutcome:
    """A dataset's violations, the sha256 of the bytes the check read, and (if it holds and
    may be remembered) the table of its rows, written beside the state for the caller to put
    in place (``verified_rows.commit_table``) once the pass is recorded."""

    violations: list[str]
    digests: dict[str, str]  # path -> sha256 of exactly the bytes the check judged
    table: str | None = None
    rows_known: int = 0  # rows found in the last pass's table (not parsed, not rescanned)


@releasing_heap
def run_job(job: VerifyJob) -> VerifyOutcome:
    layout = Layout.at(job.root)
    remembered = Remembered()
    bound: dict[str, Any] | None = None
    if job.remember:
        bound = binding(layout, job.dataset, job.check_options())
        remembered = Remembered(table=VerifiedRows.load(table_path(layout, job.dataset), bound), builder=TableBuilder())
    violations = verify_dataset(
        layout,
        job.dataset,
        include_review=job.include_review,
        include_partial=job.include_partial,
        max_pairs_per_task=job.max_pairs_per_task,
        limit=VIOLATION_LIMIT,
        trusted={Path(path): [tuple(r) for r in ranges] for path, ranges in job.trusted.items()},  # type: ignore[misc]
        remembered=remembered,
    )
    written = None
    # kept only for a pass, and only if nothing it is bound to (the manifest) moved meanwhile
    if bound is not None and not violations and not job.dry_run and binding(layout, job.dataset, job.check_options()) == bound:
        remembered.table = None  # its rows still needed are in the builder
        temporary = table_path(layout, job.dataset).with_name(f".{job.dataset}.verified_rows.{os.getpid()}.npz")
        assert remembered.builder is not None
        remembered.builder.write(temporary, bound)
        written = str(temporary)
    return VerifyOutcome(
        violations=violations,
        digests={str(path): digest for path, digest in remembered.digests.items()},
        table=written,
        rows_known=remembered.rows_known,
    )


def keep_outcome(layout: Layout, job: VerifyJob, outcome: VerifyOutcome, files: list[Path]) -> bool:
    """After a check: a pass is recorded (``increments.record_verified``) for exactly the bytes
    it read, and its row table put in place; anything else forgets both. Returns whether a
    pass was recorded."""
    read = {path: outcome.digests[str(path)] for path in files if str(path) in outcome.digests}
    for left in table_path(layout, job.dataset).parent.glob(f".{job.dataset}.verified_rows.*.npz"):
        if str(left) != outcome.table:  # a table a check that died before this point wrote
            left.unlink(missing_ok=True)
    if not outcome.violations and not job.dry_run and record_verified(layout, job.dataset, job.export_options, files, read):
        commit_table(layout, job.dataset, outcome.table)
        return True
    if outcome.violations or job.dry_run:
        forget_verified(layout, job.dataset)  # (record_verified forgets on its own when it refuses)
    forget_table(layout, job.dataset, outcome.table)
    return False


def verify_side_by_side(jobs: list[VerifyJob]) -> dict[str, VerifyOutcome]:
    """Each dataset's outcome (no violations: it holds): the smallest file in the calling
    process, which has the code imported already, and each larger one in a spawned worker
    (``lib/workers.warm_up``'s if it ran), started first.

    The calling process has just run the pipeline's stages and keeps their high-water memory;
    a check's arrays (~80 bytes a row) on top of that were the run's peak at 1M rows, so the
    large datasets are checked in fresh processes that give their memory back when done."""
    if len(jobs) <= 1:
        return {job.dataset: run_job(job) for job in jobs}
    *larger, smallest = sorted(jobs, key=_size, reverse=True)
    with taken(len(larger)) as pool:  # the last stage to use the workers: joined on leaving
        futures = {job.dataset: pool.submit(run_job, job) for job in larger}
        outcomes = {smallest.dataset: run_job(smallest)}
        outcomes.update({dataset: future.result() for dataset, future in futures.items()})
    return {job.dataset: outcomes[job.dataset] for job in jobs}


def _size(job: VerifyJob) -> int:
    path = Layout.at(job.root).dataset_file(job.dataset)
    return path.stat().st_size if path.is_file() else 0
