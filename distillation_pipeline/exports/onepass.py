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
from distillation_pipeline.exports.paths import RepoManifest
from distillation_pipeline.exports.quarantine import open_outputs
from distillation_pipeline.exports.result import ExportResult
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

    with contextlib.ExitStack() as stack:
        for participant in participants:
            participant.open(stack.enter_context(open_outputs(participant.outputs, dry_run)))
        for source in sources:
            _visit(source, participants)
        for participant in participants:
            participant.finish()
    for participant in participants:
        participant.result.outputs = [] if dry_run else list(participant.outputs)
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
