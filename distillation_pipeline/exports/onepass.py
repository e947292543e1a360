"""One pass over the evidence and scored trees for every selected dataset.

Reading is the expensive part of an export: each zipped position is an evidence line and a
scored line to parse and validate. The three datasets read the same positions in the same
order, so they share one read: every position is parsed once and offered to each dataset whose
streams admit it (``Participant.eligible``); a file no selected dataset admits is only counted.
Each dataset still writes its own files, keeps its own counts and refuses on its own rules, and
sees exactly the positions it would see alone, so a dataset's bytes do not depend on which
others were exported beside it (tested). That is what lets ``parallel_export`` run two passes
side by side, one per core: each prepares its outputs (``prepare_exports``), and the caller
puts both in place or neither.

Text scans shared between datasets (credentials, cited paths) are memoised per text in
``secrets.find_secret`` and ``paths.cited_paths``, so SFT and preference scanning the same
prompt and response pay once.
"""

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


from distillation_pipeline.exports.candidates import (
    Broken,
    Candidate,
    SourceFiles,
    input_files,
    iter_lines,
    list_source_files,
    read_position,
)
from distillation_pipeline.exports.card import FileStats, remember_stats
from distillation_pipeline.exports.increments import (
    FileWindow,
    PartitionRecord,
    PrefixCheck,
    StateCommit,
    StateReader,
    StateWriter,
    code_digest,
    counts_delta,
    counts_of,
    partition_window,
)
from distillation_pipeline.exports.paths import RepoManifest
from distillation_pipeline.exports.quarantine import open_outputs
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.lib.atomic import StagedFile
from distillation_pipeline.lib.digests import remember_digests
from distillation_pipeline.lib.hashing import HashingSink
from distillation_pipeline.lib.layout import Layout

HALLUCINATION_CHECK = "hallucinated_file_path"


class Participant:
    """A dataset inside the shared pass. What every dataset does the same way is here;
    ``streaming.RowExport`` (RAG, SFT) and ``preference.PreferenceExport`` do the rest."""

    # ExportResult fields a partition adds to: recorded per partition, added back on reuse
    COUNTED: tuple[str, ...] = ()
    eligible: Callable[[str], bool]

    def __init__(self, result: ExportResult, outputs: list[Path]) -> None:
        self.result = result
        self.outputs = outputs
        self.manifest: RepoManifest | None = None
        self._begin_counts: dict = {}

    def ineligible(self, stream: str, count: int) -> None:
        self.result.records_in += count
        self.result.count_ineligible(stream, count)

    def begin_partition(self) -> None:
        self._begin_counts = counts_of(self.result, self.COUNTED)

    def partition_counts(self) -> dict:
        """What the partition since ``begin_partition`` added to the counted fields."""
        return counts_delta(counts_of(self.result, self.COUNTED), self._begin_counts)

    def open(self, sinks: list[HashingSink]) -> None:
        raise NotImplementedError

    def attach_state(self, previous: StateReader | None, writer: StateWriter | None, current: set[str]) -> None:
        """The previous run's state and this run's, for a dataset that keeps more than its
        partition records (RAG/SFT their ids, preference its pairs per task); None on a dry
        run. ``current``: the partitions there are now."""

    def not_reused(self, relative: str) -> None:
        """The pass reads ``relative`` from its first position for this dataset."""

    def offer(self, item: Candidate | Broken) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def card_stats(self) -> list[FileStats]:  # per output: rows and mixes as the card counts them
        raise NotImplementedError

    def can_reuse(self, record: PartitionRecord) -> bool:
        raise NotImplementedError

    def reuse(self, record: PartitionRecord, previous: StateReader) -> None:
        """Take the partition's recorded prefix: its output bytes copied (``previous.copy``)."""
        raise NotImplementedError

    def end_partition(self, relative: str, window: FileWindow) -> PartitionRecord:
        raise NotImplementedError


def _file_states(source: SourceFiles) -> tuple:
    """What tells us a file changed under us: size, mtime, inode and ctime of both files."""
    states = []
    for path in (source.evidence, source.scored):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            states.append(None)
            continue
        states.append((stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns))
    return tuple(states)


@dataclass
class PreparedExport:
    """An export pass whose outputs and state are complete and synced beside their targets,
    not yet in place. Plain values: a worker process that ran a pass hands it to the process
    that commits every dataset's (``commit``), or none (``discard``)."""

    layout: Layout
    results: dict[str, ExportResult]
    outputs: list[StagedFile]
    digests: dict[Path, str]  # sha256 of each output, by its target
    stats: list[FileStats]  # the dataset card's counts of each output
    states: list[StateCommit]

    def commit(self) -> dict[str, ExportResult]:
        for staged in self.outputs:
            staged.commit()
        if self.outputs:  # after the renames: the digest cache is keyed by the files' stat
            # Receipts and the dataset card then need not read ~all exported bytes back.
            remember_digests(self.layout, self.digests)
            remember_stats(self.layout, self.stats)
        for state in self.states:  # after the outputs: the state names their sha256
            state.apply()
        return self.results

    def discard(self) -> None:
        """Leave every previous output as it was, and drop the export state (next run: full)."""
        for staged in self.outputs:
            staged.discard()
        for state in self.states:
            state.discard()


def run_exports(layout: Layout, participants: Sequence[Participant], *, dry_run: bool) -> dict[str, ExportResult]:
    """Export every participant's dataset in one read of the trees; results by dataset name.

    All outputs are replaced atomically when the pass succeeds; an exception leaves every
    previous output as it was (and drops the export state, so the next run reads everything).
    What the previous run recorded (``exports/increments.py``) lets unchanged partition
    prefixes be copied instead of re-read; a dry run reads everything and records nothing.
    """
    return prepare_exports(layout, participants, dry_run=dry_run).commit()


def prepare_exports(layout: Layout, participants: Sequence[Participant], *, dry_run: bool) -> PreparedExport:
    """``run_exports`` up to putting the outputs in place: that is ``PreparedExport.commit``."""
    sources = list_source_files(layout)
    current = {source.relative for source in sources}
    inputs = input_files(sources)
    manifest = RepoManifest.load(layout.repo_manifest)
    for participant in participants:
        participant.result.inputs = list(inputs)
        participant.manifest = manifest
        if manifest is None:  # the check is recorded as not run, never as passed
            participant.result.checks_not_run.append(HALLUCINATION_CHECK)
        else:
            participant.result.inputs.append(layout.repo_manifest)

    code = code_digest()
    previous = {} if dry_run else {
        p: StateReader(layout, p.result.dataset, p.result.options, p.outputs, code) for p in participants
    }
    pass_ = _Pass(layout, participants, previous)
    pass_.prefixes.prefetch([path for source in sources for path in (source.evidence, source.scored)])
    written: dict[Path, HashingSink] = {}
    staged: list[StagedFile] = []
    writers = {} if dry_run else {p: StateWriter(layout, p.result.dataset, p.result.options, code) for p in participants}
    try:
        with contextlib.ExitStack() as stack:
            for participant in participants:
                handles, outputs = stack.enter_context(open_outputs(participant.outputs, dry_run))
                sinks = [HashingSink(handle) for handle in handles]
                staged += outputs
                written.update(zip(participant.outputs, sinks, strict=True))
                participant.open(sinks)
                participant.attach_state(previous.get(participant), writers.get(participant), current)
            for source in sources:
                for participant, record in pass_.visit(source):
                    if participant in writers:
                        writers[participant].add(record)
            for participant in participants:
                participant.finish()
            # Before the outputs replace the previous ones: every copy is proven against the
            # bytes the state names (``StaleOutput`` otherwise, and the previous outputs stay).
            copied_verified = {p: state.confirm() for p, state in previous.items() if state.valid}
        for participant in participants:
            participant.result.outputs = [] if dry_run else list(participant.outputs)
            participant.result.reused_positions = pass_.reused.get(participant, 0)
        digests = {} if dry_run else {path: sink.hexdigest() for path, sink in written.items()}
        stats = [] if dry_run else [s for participant in participants for s in participant.card_stats()]
        for s in stats:
            s.sha256, s.bytes = digests[s.path], written[s.path].size
        states = [
            writer.prepare({path: digests[path] for path in participant.outputs}, copied_verified.get(participant, False))
            for participant, writer in writers.items()
        ]
    except BaseException:
        for output in staged:
            output.discard()
        for writer in writers.values():
            writer.abandon()
        raise
    results = {participant.result.dataset: participant.result for participant in participants}
    return PreparedExport(layout, results, staged, digests, stats, states)


class _Pass:
    """Visits partitions in order: reuse what each dataset may, parse the rest once for all."""

    def __init__(
        self, layout: Layout, participants: Sequence[Participant], previous: dict[Participant, StateReader]
    ) -> None:
        self.layout = layout
        self.participants = participants
        self.previous = previous
        self.prefixes = PrefixCheck(layout)
        self.reused: dict[Participant, int] = {}  # positions taken from the previous run, per dataset

    def visit(self, source: SourceFiles) -> Iterator[tuple[Participant, PartitionRecord]]:
        """Offer one partition file's positions to the datasets that admit its stream.

        Yields each taker's record of the partition, for the next run.
        """
        takers = [p for p in self.participants if p.eligible(source.stream)]
        if not takers:  # nobody parses a line of it
            count = sum(1 for _ in itertools.zip_longest(iter_lines(source.evidence), iter_lines(source.scored)))
            self._count_for_the_others(source, takers, count)
            return
        before = _file_states(source)  # a partition that changes while it is read is not kept
        for participant in takers:
            participant.begin_partition()
        covered = self._reuse(source, takers)
        # Read from the fewest positions any taker reuses: every recorded window describes the
        # same file prefix, so the byte offsets of one with that many positions fit them all;
        # takers that reused more skip the positions they already have.
        start = min(covered.get(p, (0, 0, 0))[0] for p in takers)
        _, evidence_start, scored_start = next(
            (window for window in covered.values() if window[0] == start), (0, 0, 0)
        )
        pairs = itertools.zip_longest(iter_lines(source.evidence, evidence_start), iter_lines(source.scored, scored_start))
        count = start
        aligned = True  # every position had both lines (else a later run may fill the gap)
        for index, (evidence_line, scored_line) in enumerate(pairs, start=start):
            aligned = aligned and evidence_line is not None and scored_line is not None
            item = read_position(source, index, evidence_line, scored_line)
            for participant in takers:
                if index >= covered.get(participant, (0,))[0]:
                    participant.offer(item)
            count += 1
        self._count_for_the_others(source, takers, count)
        stable = aligned and None not in before and _file_states(source) == before
        sizes = (before[0][0], before[1][0]) if stable else (0, 0)  # type: ignore[index]
        window = partition_window(source, count, sizes, self.prefixes) if stable else None
        if window is not None:
            for participant in takers:
                yield participant, participant.end_partition(source.relative, window)

    def _reuse(self, source: SourceFiles, takers: list[Participant]) -> dict[Participant, tuple[int, int, int]]:
        """Per taker that reuses a prefix: (positions, evidence bytes, scored bytes) it covers."""
        covered = {}
        for participant in takers:
            state = self.previous.get(participant)
            record = state.record(source.relative) if state is not None and state.valid else None
            if record is None or not self.prefixes.holds(source, record) or not participant.can_reuse(record):
                participant.not_reused(source.relative)
                continue
            participant.reuse(record, state)  # type: ignore[arg-type]
            covered[participant] = (record.positions, record.evidence_bytes, record.scored_bytes)
            self.reused[participant] = self.reused.get(participant, 0) + record.positions
        return covered

    def _count_for_the_others(self, source: SourceFiles, takers: list[Participant], count: int) -> None:
        """The datasets that do not admit this stream count its positions as ineligible."""
        if count:
            for participant in self.participants:
                if participant not in takers:
                    participant.ineligible(source.stream, count)
