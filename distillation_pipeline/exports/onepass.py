"""One pass over the evidence and scored trees for every selected dataset.

Reading is the expensive part of an export: each zipped position is an evidence line and a
scored line to parse and validate. The three datasets read the same positions in the same
order, so they share one read: every position is parsed once and offered to each dataset whose
streams admit it (``Participant.eligible``); a file no selected dataset admits is only counted.
Each dataset still writes its own files, keeps its own counts and refuses on its own rules, and
sees exactly the positions it would see alone, so a dataset's bytes do not depend on which
others were exported beside it (tested).

Text scans shared between datasets (credentials, cited paths) are memoised per text in
``secrets.find_secret`` and ``paths.cited_paths``, so SFT and preference scanning the same
prompt and response pay once.
"""

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Protocol

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
from distillation_pipeline.exports.paths import RepoManifest
from distillation_pipeline.exports.quarantine import open_outputs
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.lib.digests import remember_digests
from distillation_pipeline.lib.layout import Layout

HALLUCINATION_CHECK = "hallucinated_file_path"


class Participant(Protocol):
    """A dataset inside the shared pass (``streaming.RowExport``, ``preference.PreferenceExport``)."""

    result: ExportResult
    outputs: list[Path]
    manifest: RepoManifest | None
    eligible: Callable[[str], bool]

    def open(self, sinks: list[IO[bytes]]) -> None: ...
    def ineligible(self, stream: str, count: int) -> None: ...
    def offer(self, item: Candidate | Broken) -> None: ...
    def finish(self) -> None: ...
    def card_stats(self) -> list[FileStats]: ...  # per output: rows and mixes as the card counts them


class HashingSink:
    """Passes writes through and hashes them: each output's sha256 without reading it back."""

    __slots__ = ("_inner", "_digest", "size")

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._inner.write(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def run_exports(layout: Layout, participants: Sequence[Participant], *, dry_run: bool) -> dict[str, ExportResult]:
    """Export every participant's dataset in one read of the trees; results by dataset name.

    All outputs are replaced atomically when the pass succeeds; an exception leaves every
    previous file as it was.
    """
    sources = list_source_files(layout)
    inputs = input_files(sources)
    manifest = RepoManifest.load(layout.repo_manifest)
    for participant in participants:
        participant.result.inputs = list(inputs)
        participant.manifest = manifest
        if manifest is None:  # the check is recorded as not run, never as passed
            participant.result.checks_not_run.append(HALLUCINATION_CHECK)
        else:
            participant.result.inputs.append(layout.repo_manifest)

    written: dict[Path, HashingSink] = {}
    with contextlib.ExitStack() as stack:
        for participant in participants:
            sinks = [HashingSink(sink) for sink in stack.enter_context(open_outputs(participant.outputs, dry_run))]
            written.update(zip(participant.outputs, sinks, strict=True))
            participant.open(sinks)  # type: ignore[arg-type]
        for source in sources:
            _visit(source, participants)
        for participant in participants:
            participant.finish()
    for participant in participants:
        participant.result.outputs = [] if dry_run else list(participant.outputs)
    if not dry_run:
        # Receipts and the dataset card then need not read ~all exported bytes back.
        remember_digests(layout, {path: sink.hexdigest() for path, sink in written.items()})
        stats = [s for participant in participants for s in participant.card_stats()]
        for s in stats:
            s.sha256, s.bytes = written[s.path].hexdigest(), written[s.path].size
        remember_stats(layout, stats)
    return {participant.result.dataset: participant.result for participant in participants}


def _visit(source: SourceFiles, participants: Sequence[Participant]) -> None:
    """Offer every position of one partition file to the datasets that admit its stream."""
    takers = [p for p in participants if p.eligible(source.stream)]
    pairs = itertools.zip_longest(iter_lines(source.evidence), iter_lines(source.scored))
    count = 0
    if takers:
        for index, (evidence_line, scored_line) in enumerate(pairs):
            item = read_position(source, index, evidence_line, scored_line)
            for participant in takers:
                participant.offer(item)
            count += 1
    else:
        count = sum(1 for _ in pairs)  # nobody parses a line of it
    if count:
        for participant in participants:
            if participant not in takers:
                participant.ineligible(source.stream, count)
