"""The export pass split over both cores: RAG in one process, SFT and preference in the other.

A dataset's bytes do not depend on which others share its pass (``onepass``; tested), so the
selected datasets can be exported by two passes at once, each reading the evidence and scored
trees itself. Reading is then paid twice, but the per-dataset work, most of the pass, is
halved. Measured with dry runs on a 300k-row substrate (CPU seconds, one process each):
all three datasets in one pass 20.7; RAG alone 13.3; SFT and preference 13.9; RAG and SFT
14.9; preference alone 8.4. So RAG goes on its own, and the pass takes about as long as its
slower half: ~14 s instead of ~21 s.

Below ``SPLIT_MIN_TREE_BYTES`` of evidence and scored lines the datasets share one pass in this
process: a worker that is not already running (a run launched from the UI starts one per step)
costs ~0.6 s to start and import, more than half of a ~1 s export saves. A process limited to
one core never splits (``lib/workers.can_split``).

Both halves stop short of putting anything in place (``onepass.prepare_exports``): each
returns its outputs and state staged and synced beside their targets, and this process
commits both, or, if either half failed, discards both. So a failure still leaves every
previous output as it was, as in a single pass.
"""

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from distillation_pipeline.exports.candidates import input_files, list_source_files
from distillation_pipeline.exports.onepass import Participant, PreparedExport, prepare_exports
from distillation_pipeline.exports.preference import DEFAULT_MAX_PAIRS_PER_TASK, preference_export
from distillation_pipeline.exports.rag import rag_export
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.sft import sft_export
from distillation_pipeline.lib.heap import releasing_heap
from distillation_pipeline.lib.layout import DATASETS, Layout
from distillation_pipeline.lib.workers import borrowed, can_split

# ~18k source rows: a single pass over them takes ~1 s on this machine
SPLIT_MIN_TREE_BYTES = 32 << 20


@dataclass(frozen=True)
class DatasetExport:
    """One dataset to export and its options, as plain values a worker process can receive."""

    dataset: str  # one of DATASETS
    include_review: bool = False  # rag
    include_partial: bool = False  # sft
    max_pairs_per_task: int = DEFAULT_MAX_PAIRS_PER_TASK  # preference

    def participant(self, layout: Layout, dry_run: bool) -> Participant:
        if self.dataset == "rag":
            return rag_export(layout, include_review=self.include_review, dry_run=dry_run)
        if self.dataset == "sft":
            return sft_export(layout, include_partial=self.include_partial, dry_run=dry_run)
        if self.dataset == "preference":
            return preference_export(layout, max_pairs_per_task=self.max_pairs_per_task, dry_run=dry_run)
        raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")


def halves(exports: Sequence[DatasetExport]) -> list[list[DatasetExport]]:
    """The groups to export side by side: RAG apart from the other two (see the module
    docstring), two datasets one each, one dataset alone."""
    if len(exports) == 2:
        return [[exports[0]], [exports[1]]]
    rag = [e for e in exports if e.dataset == "rag"]
    others = [e for e in exports if e.dataset != "rag"]
    return [rag, others] if rag and others else [list(exports)]


def _prepare(layout: Layout, exports: Sequence[DatasetExport], dry_run: bool) -> PreparedExport:
    return prepare_exports(layout, [e.participant(layout, dry_run) for e in exports], dry_run=dry_run)


def bytes_to_read(layout: Layout) -> int:
    """The evidence and scored lines an export pass reads (before any reuse)."""
    return sum(path.stat().st_size for path in input_files(list_source_files(layout)))


@releasing_heap
def export_datasets(
    layout: Layout, exports: Sequence[DatasetExport], *, dry_run: bool, split: bool | None = None
) -> dict[str, ExportResult]:
    """Export the datasets, in two processes when there are two groups, two cores and enough to
    read (``split`` forces or forbids it); results by dataset."""
    if split is None:
        split = can_split() and bytes_to_read(layout) >= SPLIT_MIN_TREE_BYTES
    groups = halves(exports) if split else [list(exports)]
    if len(groups) == 1:
        return _prepare(layout, groups[0], dry_run).commit()
    mine, theirs = groups
    with borrowed() as pool:
        future = pool.submit(_prepare, layout, theirs, dry_run)
        try:
            here = _prepare(layout, mine, dry_run)
        except BaseException:
            _discard_when_done(future)
            raise
        try:
            there = future.result()
        except BaseException:
            here.discard()
            raise
    results = {**here.commit(), **there.commit()}
    return {dataset: results[dataset] for dataset in DATASETS if dataset in results}  # in their usual order


def _discard_when_done(future: "Future[PreparedExport]") -> None:
    """This half failed: the other half's staged files must not be left behind (it may still be
    running, and a running task cannot be cancelled)."""
    try:
        future.result().discard()
    except BaseException:  # noqa: BLE001, S110 (its own failure: our exception is the one reported)
        pass
