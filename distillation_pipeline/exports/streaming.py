"""What RAG and SFT share: candidates in, rows or refusals out, counts conserved.

A dataset module supplies which streams are eligible and how one candidate becomes a row (or
a refusal); ``RowExport`` does the rest the same way for both: ineligible and broken
positions, duplicate content, the writes, and the counts. Memory for duplicate detection and its message
is ~40 bytes per written row (``exports/id_table.IdIndex``), the rest is on disk.

Incremental runs look duplicates up in the previous run's id table (``exports/id_table.py``)
instead: only the rows read this run touch it, and a partition is copied unless a row read
this run took the place of one of its first copies.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from distillation_pipeline.exports.id_table import DETAILS_FILE, TABLE_FILE, IdIndex, IdTable, fingerprint

from distillation_pipeline.exports.candidates import Broken, Candidate
from distillation_pipeline.exports.card import FileStats
from distillation_pipeline.exports.increments import (
    FileWindow,
    PartitionRecord,
    StateReader,
    StateWriter,
    add_counts,
)
from distillation_pipeline.exports.onepass import HashingSink, Participant
from distillation_pipeline.exports.paths import RepoManifest, cited_paths
from distillation_pipeline.exports.quarantine import QuarantineWriter
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.secrets import find_secret_in
import tempfile
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.schemas import QuarantineReason


@dataclass(slots=True)
class Row:
    """A dataset row that validated against the dataset's schema, as the JSON object written:
    the dict the sample was validated from, which is what the sample's ``model_dump(mode="json")``
    would give (tested) without the dump, about a quarter of building a row (measured)."""

    id: str
    data: dict
    category: str
    variant: dict | None = None  # the same row in the dataset's second layout (OpenAI), if any


Refusal = tuple[QuarantineReason, str]
Builder = Callable[[Candidate, RepoManifest | None], Row | Refusal]


def prompt_response_refusal(
    candidate: Candidate, manifest: RepoManifest | None, *, check_paths: bool
) -> Refusal | None:
    """Why a prompt/response pair cannot be exported: empty side, credential, invented file.

    Only the response is held to the manifest: a task may name a file it asks to create.
    """
    prompt, response = candidate.evidence.prompt, candidate.evidence.response
    if not (prompt and prompt.strip()):
        return "empty_content", "no prompt text"
    if not (response and response.strip()):
        return "empty_content", "no response text"
    secret = find_secret_in((("prompt", prompt), ("response", response)))
    if secret is not None:
        return "secret_detected", secret
    return hallucination_refusal(manifest, cited_paths(response)) if check_paths else None


def hallucination_refusal(manifest: RepoManifest | None, cited: list[str]) -> Refusal | None:
    if manifest is None or not cited:
        return None
    missing = manifest.missing(cited)
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
    return "hallucinated_file_path", f"cites path(s) not in the repository: {shown}"


class RowExport(Participant):
    """One row-per-candidate dataset (RAG or SFT) inside the shared export pass.

    ``exports/onepass.py`` visits every zipped position once and offers it to each selected
    dataset; this object turns what it is offered into rows or refusals for its dataset, in
    the order offered, so each dataset's bytes do not depend on which others ran beside it.
    """

    def __init__(
        self,
        result: ExportResult,
        *,
        eligible: Callable[[str], bool],
        build: Builder,
        dataset_file: Path,
        variant_file: Path | None,
        quarantine_file: Path,
    ) -> None:
        super().__init__(result, [dataset_file, *([variant_file] if variant_file else []), quarantine_file])
        self.eligible = eligible
        self._build = build
        self._has_variant = variant_file is not None
        self._table: IdTable | None = None  # the previous run's ids (incremental runs)
        self._ids: IdIndex | None = None  # this run's first copies (``attach_state``)
        self._dirty: set[str] = set()  # partitions whose bytes a row read this run changes
        self._scratch: IO[bytes] | None = None  # a dry run's unlinked details file

    def open(self, sinks: list[HashingSink]) -> None:
        self._sinks = sinks
        self._rows = sinks[0]
        self._variants = sinks[1] if self._has_variant else None
        self._quarantine = QuarantineWriter(self.result.dataset, sinks[-1], self.result)  # type: ignore[arg-type]

    def offer(self, item: Candidate | Broken) -> None:
        result = self.result
        result.records_in += 1
        if isinstance(item, Broken):
            self._quarantine.refuse_broken(item)
            return
        built = self._build(item, self.manifest)
        if isinstance(built, Row):
            row_id = built.id
            first = self._first_copy(row_id, item)
            if first is None:
                self._rows.write(dumps_line(built.data))
                if self._variants is not None and built.variant is not None:
                    self._variants.write(dumps_line(built.variant))
                    result.variants_written += 1
                result.count_written(built.category)
                result.written_streams[item.stream] = result.written_streams.get(item.stream, 0) + 1
                return
            built = ("duplicate_id", f"same content as {row_id} (first exported from evidence {first})")
        reason, detail = built
        self._quarantine.refuse_candidate(item, reason, detail)

    def _first_copy(self, row_id: str, item: Candidate) -> str | None:
        """The evidence id of the first copy of ``row_id`` before ``item``; None if it is the first."""
        ids = self._ids
        assert ids is not None
        fp = fingerprint(row_id)
        first = ids.lookup(row_id, fp)  # written earlier this run
        if first is not None:
            ids.duplicate(fp, item.source.relative)
            return first
        where = (item.source.relative, item.index)
        found = self._table.first(row_id, fp) if self._table is not None else None
        if found is not None:
            kept_at, kept_evidence, slot = found
            if kept_at < where:
                ids.duplicate(fp, item.source.relative)
                return kept_evidence
            if kept_at > where:
                # This row comes before the recorded first copy: that partition now refuses it
                # as a duplicate (read again, it is struck out, and so are the partitions
                # refusing duplicates of its first copies: they name another first).
                self._dirty.add(kept_at[0])
        ids.add(row_id, fp, where, item.evidence.id, replaces=found[2] if found is not None else None)
        return None

    def finish(self) -> None:
        """Nothing is held back: every row was written as it was offered."""
        if self._ids is not None:
            self._ids.finish()
        if self._table is not None:
            self._table.close()
        if self._scratch is not None:
            self._scratch.close()

    # --- incremental runs ---------------------------------------------------------------------

    COUNTED = ("records_in", "written", "quarantined", "per_category", "per_reason", "written_streams",
               "variants_written")  # fmt: skip

    def begin_partition(self) -> None:
        super().begin_partition()
        self._copied: list[list[int]] = []
        self._begin_sizes = [sink.size for sink in self._sinks]

    def attach_state(self, previous: StateReader | None, writer: StateWriter | None, current: set[str]) -> None:
        table = details = None
        if previous is not None:
            table, details = previous.side_file(TABLE_FILE), previous.side_file(DETAILS_FILE)
        if table is not None and details is not None:
            try:
                self._table = IdTable(table, details)
            except (OSError, ValueError, KeyError, TypeError):
                self._table = None  # unreadable: read everything, as with no state
        if writer is not None:
            self._ids = IdIndex(writer.side_file(TABLE_FILE), writer.side_file(DETAILS_FILE), self._table)
        else:  # a dry run: the ids wait in an unlinked file, no table is kept
            self._scratch = tempfile.TemporaryFile()
            self._ids = IdIndex(None, self._scratch, self._table)
        if self._table is not None:
            for relative in self._table.relatives:
                if relative not in current:  # its first copies are gone: their duplicates move
                    self._dirty.update(self._table.strike(relative))

    def can_reuse(self, record: PartitionRecord) -> bool:
        """Only with the previous run's ids (else every id must be seen again), and only if no
        row read this run took the place of one of the partition's first copies."""
        return self._table is not None and record.relative not in self._dirty

    def not_reused(self, relative: str) -> None:
        # Read again from its start: what the table says it first wrote no longer counts, and
        # partitions refusing duplicates of those rows are read again after it.
        if self._table is not None:
            self._dirty.update(self._table.strike(relative))

    def reuse(self, record: PartitionRecord, previous: StateReader) -> None:
        for path, (start, end), sink in zip(self.outputs, record.ranges, self._sinks, strict=True):
            begin = sink.size
            previous.copy(path, start, end, sink)
            self._copied.append([begin, sink.size])
        add_counts(self.result, record.counts)

    def end_partition(self, relative: str, window: FileWindow) -> PartitionRecord:
        return PartitionRecord(
            relative=relative, **window.__dict__,
            ranges=[[start, sink.size] for start, sink in zip(self._begin_sizes, self._sinks, strict=True)],
            counts=self.partition_counts(), copied=self._copied,
        )  # fmt: skip

    def card_stats(self) -> list[FileStats]:
        result = self.result
        stats = [FileStats(self.outputs[0], rows=result.written, categories=Counter(result.per_category),
                           streams=Counter(result.written_streams))]  # fmt: skip
        if self._has_variant:
            stats.append(FileStats(self.outputs[1], rows=result.variants_written))
        stats.append(FileStats(self.outputs[-1], rows=result.quarantined, reasons=Counter(result.per_reason)))
        return stats
