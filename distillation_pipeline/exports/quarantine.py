"""The shared quarantine writer: every refused row, one reason from the taxonomy, and why.

Each exporter refuses through one ``QuarantineWriter``; it builds a ``QuarantineRecord``
(so a reason outside ``schemas.QuarantineReason`` is an error, not a new silent category),
writes it to ``exports/quarantine/<dataset>.jsonl`` and counts it in the export's result.
Details name what was wrong (a credential's kind, a missing path), never a credential itself.
"""

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from distillation_pipeline.exports.candidates import Broken, Candidate
from distillation_pipeline.exports.ids import quarantine_id
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.lib.atomic import StagedFile, staged_writer
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.schemas import QuarantineReason, QuarantineRecord

# created_at for a refusal whose evidence is too broken to say when it was recorded. A fixed
# value, not the wall clock, so two runs over the same input stay byte-identical.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_DETAIL_CHARS = 500


class _NullSink:
    """Stands in for a file under ``dry_run``: counts are computed, nothing is written."""

    def write(self, data: bytes) -> int:
        return len(data)


@contextlib.contextmanager
def open_outputs(paths: list[Path], dry_run: bool) -> Iterator[tuple[list[IO[bytes]], list[StagedFile]]]:
    """One sink per path, and the staged file each becomes when the block succeeds (synced,
    not yet in place: the caller commits all of them, or discards them); on error none is
    left. A dry run writes nothing and stages nothing."""
    if dry_run:
        yield [_NullSink() for _ in paths], []  # type: ignore[misc]
        return
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(staged_writer(path)) for path in paths]
        yield [handle for handle, _ in opened], [staged for _, staged in opened]


class QuarantineWriter:
    def __init__(self, dataset: str, sink: IO[bytes], result: ExportResult) -> None:
        self.dataset = dataset
        self._sink = sink
        self._result = result

    def refuse(
        self,
        reason: QuarantineReason,
        detail: str,
        *,
        where: str,
        evidence_id: str | None,
        stream: str | None = None,
        task_id: str | None = None,
        category: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        """Quarantine one refused record or pair. ``where`` makes the id unique (file#line, pair ids)."""
        record = QuarantineRecord(
            id=quarantine_id(self.dataset, reason, evidence_id, where),
            dataset=self.dataset,  # type: ignore[arg-type]
            reason=reason,
            detail=detail[:_DETAIL_CHARS],
            evidence_id=evidence_id,
            stream=stream,
            task_id=task_id,
            category=category,
            created_at=created_at or UNKNOWN_TIME,
        )
        self._sink.write(dumps_line(record.model_dump(mode="json")))
        self._result.quarantined += 1
        self._result.per_reason[reason] = self._result.per_reason.get(reason, 0) + 1

    def refuse_broken(self, broken: Broken) -> None:
        self.refuse(
            broken.reason,
            broken.detail,
            where=broken.where,
            evidence_id=broken.evidence_id,
            stream=broken.stream,
            task_id=broken.task_id,
            category=broken.category,
            created_at=broken.created_at,
        )

    def refuse_candidate(self, candidate: Candidate, reason: QuarantineReason, detail: str) -> None:
        self.refuse(
            reason,
            detail,
            where=candidate.where,
            evidence_id=candidate.evidence.id,
            stream=candidate.stream,
            task_id=candidate.evidence.task_id,
            category=candidate.category,
            created_at=candidate.created_at,
        )
