"""Verify several datasets side by side, in two processes.

The firewall re-read is pure CPU per dataset (parse, rescan for credentials and cited paths,
recompute ids; on later runs mostly hashing lines, see ``verified_rows``) and the datasets are
independent, so on a 2-core machine the RAG check (the largest) runs in a worker process while
SFT and preference run in the calling process: the checks take about as long as the RAG check
alone instead of the sum. A single dataset is verified in the calling process.

The worker is ``lib/workers``': the warm one if the stages before borrowed it (the ``distill``
command), else spawned here. The checks are its last user: they take it and join it when done.
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
from distillation_pipeline.lib.workers import can_split, taken

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
    """Each dataset's outcome (no violations: it holds), in two processes where there are two
    cores: the largest file goes to a spawned worker (``lib/workers.warm_up``'s if it ran), and
    each next one, largest first, to whichever side has fewer bytes to read so far. At 1M rows
    that puts RAG (578 MB) in the worker and SFT and preference (342 and 169 MB) here.

    Two processes, not one per dataset: the machine has two cores, and a third process would
    only hold its own memory at the run's peak (the calling process gives back what its stages
    freed, ``lib/heap``)."""
    if len(jobs) <= 1 or not can_split():
        return {job.dataset: run_job(job) for job in jobs}
    there, here = sides(jobs, {job.dataset: _size(job) for job in jobs})
    with taken(1) as pool:  # the last stage to use the worker: joined on leaving
        futures = {job.dataset: pool.submit(run_job, job) for job in there}
        outcomes = {job.dataset: run_job(job) for job in here}
        outcomes.update({dataset: future.result() for dataset, future in futures.items()})
    return {job.dataset: outcomes[job.dataset] for job in jobs}


def sides(jobs: list[VerifyJob], sizes: dict[str, int]) -> tuple[list[VerifyJob], list[VerifyJob]]:
    """(the worker's jobs, the calling process's): largest first, each to the side with fewer
    bytes so far, the worker first on a tie."""
    there: list[VerifyJob] = []
    here: list[VerifyJob] = []
    for job in sorted(jobs, key=lambda job: sizes[job.dataset], reverse=True):
        side = there if sum(sizes[j.dataset] for j in there) <= sum(sizes[j.dataset] for j in here) else here
        side.append(job)
    return there, here


def _size(job: VerifyJob) -> int:
    path = Layout.at(job.root).dataset_file(job.dataset)
    return path.stat().st_size if path.is_file() else 0
