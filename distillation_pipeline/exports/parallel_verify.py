"""Verify several datasets side by side: one process each, at most two at a time.

The firewall re-read is pure CPU per dataset (parse, rescan for credentials and cited paths,
recompute ids) and the datasets are independent, so on a 2-core machine the RAG check (the
largest) runs while SFT and preference run on the other core: at 1M rows the checks take about
as long as the RAG check alone instead of the sum. Workers are spawned (not forked from a
process that runs Dagster's threads) and import only this package's export code; a single
dataset is verified in the calling process.
"""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillation_pipeline.exports.verify import verify_dataset
from distillation_pipeline.lib.layout import Layout

MAX_WORKERS = 2
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


def run_job(job: VerifyJob) -> list[str]:
    return verify_dataset(
        Layout.at(job.root),
        job.dataset,
        include_review=job.include_review,
        include_partial=job.include_partial,
        max_pairs_per_task=job.max_pairs_per_task,
        limit=VIOLATION_LIMIT,
        trusted={Path(path): [tuple(r) for r in ranges] for path, ranges in job.trusted.items()},  # type: ignore[misc]
    )


def verify_side_by_side(jobs: list[VerifyJob]) -> dict[str, list[str]]:
    """Violations per dataset (empty: it holds). Largest files first, so the long one starts early."""
    if len(jobs) <= 1:
        return {job.dataset: run_job(job) for job in jobs}
    ordered = sorted(jobs, key=_size, reverse=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(MAX_WORKERS, len(jobs)), mp_context=context) as pool:
        futures = {job.dataset: pool.submit(run_job, job) for job in ordered}
        return {job.dataset: futures[job.dataset].result() for job in jobs}


def _size(job: VerifyJob) -> int:
    path = Layout.at(job.root).dataset_file(job.dataset)
    return path.stat().st_size if path.is_file() else 0
