"""What RAG and SFT share: candidates in, rows or refusals out, counts conserved.

A dataset module supplies which streams are eligible and how one candidate becomes a row (or
a refusal); ``RowExport`` does the rest the same way for both: ineligible and broken
positions, duplicate content, the writes, and the counts. Memory for duplicate detection and its message
is ~32 bytes per written row (``lib/firstseen.py``), the rest is on disk.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from distillation_pipeline.exports.candidates import Broken, Candidate
from distillation_pipeline.exports.card import FileStats
from distillation_pipeline.exports.increments import (
    FileWindow,
    PartitionRecord,
    add_counts,
    copy_range,
)
from distillation_pipeline.exports.onepass import HashingSink, Participant
from distillation_pipeline.exports.paths import RepoManifest, cited_paths
from distillation_pipeline.exports.quarantine import QuarantineWriter
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.secrets import find_secret_in
from distillation_pipeline.lib.firstseen import FirstSeen
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.schemas import QuarantineReason


@dataclass(frozen=True, slots=True)
class Row:
    sample: BaseModel  # the validated dataset row (has ``id``)
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
        self._first_seen = FirstSeen()  # row id -> evidence id of its first occurrence, ~32 bytes a row
        # events: this partition's built rows (row id, evidence id, first evidence id if a
        # duplicate), what a later run checks before it reuses the partition

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
            row_id = built.sample.id  # type: ignore[attr-defined]
            first = self._first_seen.first(row_id, item.evidence.id)
            self._events.append((row_id, item.evidence.id, first))
            if first is None:
                self._rows.write(dumps_line(built.sample.model_dump(mode="json")))
                if self._variants is not None and built.variant is not None:
                    self._variants.write(dumps_line(built.variant))
                    result.variants_written += 1
                result.count_written(built.category)
                result.written_streams[item.stream] = result.written_streams.get(item.stream, 0) + 1
                return
            built = ("duplicate_id", f"same content as {row_id} (first exported from evidence {first})")
        reason, detail = built
        self._quarantine.refuse_candidate(item, reason, detail)

    def finish(self) -> None:
        """Nothing is held back: every row was written as it was offered."""
        self._first_seen.close()

    # --- incremental runs ---------------------------------------------------------------------

    COUNTED = ("records_in", "written", "quarantined", "per_category", "per_reason", "written_streams",
               "variants_written")  # fmt: skip

    def begin_partition(self) -> None:
        super().begin_partition()
        self._copied: list[list[int]] = []
        self._begin_sizes = [sink.size for sink in self._sinks]

    def can_reuse(self, record: PartitionRecord) -> bool:
        """Every row of the prefix meets the same duplicate verdict as when it was exported."""
        own: dict[str, str] = {}  # ids the prefix itself introduces, in order
        for row_id, evidence_id, first in record.events:
            now = own.get(row_id) or self._first_seen.get(row_id)
            if now != first:
                return False
            if now is None:
                own[row_id] = evidence_id
        return True

    def reuse(self, record: PartitionRecord, previous_outputs: list[Path], verified: bool) -> None:
        for path, (start, end), sink in zip(previous_outputs, record.ranges, self._sinks, strict=True):
            begin = sink.size
            copy_range(path, start, end, sink)
            self._copied.append([begin, sink.size] if verified else [])
        for row_id, evidence_id, _ in record.events:
            self._first_seen.first(row_id, evidence_id)
        self._events = [tuple(event) for event in record.events]
        add_counts(self.result, record.counts)

    def end_partition(self, relative: str, window: FileWindow) -> PartitionRecord:
        return PartitionRecord(
            relative=relative, **window.__dict__,
            ranges=[[start, sink.size] for start, sink in zip(self._begin_sizes, self._sinks, strict=True)],
            counts=self.partition_counts(), events=self._events, copied=self._copied,
        )  # fmt: skip

    def card_stats(self) -> list[FileStats]:
        result = self.result
        stats = [FileStats(self.outputs[0], rows=result.written, categories=Counter(result.per_category),
                           streams=Counter(result.written_streams))]  # fmt: skip
        if self._has_variant:
            stats.append(FileStats(self.outputs[1], rows=result.variants_written))
        stats.append(FileStats(self.outputs[-1], rows=result.quarantined, reasons=Counter(result.per_reason)))
        return stats
