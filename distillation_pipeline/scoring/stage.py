"""Stage ``score``: the evidence tree in, ``data/scored-runs/`` and the model ledger out.

Two streaming passes over ``data/evidence/YYYY/MM/DD/<stream>.jsonl``:

1. the verdict-stream files only, to build the parent index the extraction rows join on
   (a join may cross partitions, so it needs the whole tree first);
2. every file, in relative-path order: each evidence line gets exactly one scored line in the
   mirror file ``data/scored-runs/YYYY/MM/DD/<stream>.jsonl``, in the same order, so consumers
   can zip the two files. model_trust files are the exception: their rows go to the model ledger
   and get no scored file (see ``ledger.py``); they are counted as ``ledger_rows``, so
   ``records_in == records_out + ledger_rows``.

Only one file's output is held in memory at a time. A file is replaced only when its bytes
change (mtimes of unchanged files stay), atomically; scored files whose evidence file is gone
are removed. ``dry_run`` computes everything and touches nothing.

Evidence is our own validated output. A line that is not a valid ``EvidenceRecord`` (or sits in
another stream's file) means the tree is corrupt, and a scored file that no longer lines up
with its evidence would be worse than none: the stage stops with ``EvidenceError`` naming the
file and line, instead of skipping it.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import CATEGORIES, EvidenceRecord
from distillation_pipeline.scoring.joins import ParentIndex, is_parent_stream
from distillation_pipeline.scoring.judgement import REVIEW
from distillation_pipeline.scoring.ledger import LedgerBuilder, LedgerError, ledger_bytes
from distillation_pipeline.scoring.report import render_matrix
from distillation_pipeline.scoring.rules import SCORER_VERSION, judge_record, stamp, stream_class

PARTITION_GLOB = "*/*/*/*.jsonl"  # YYYY/MM/DD/<stream>.jsonl


class EvidenceError(ValueError):
    """An evidence line the scorer cannot score: the evidence tree is corrupt."""


@dataclass(frozen=True)
class ScoreResult:
    scorer_version: str
    dry_run: bool
    records_in: int  # evidence lines read, every stream
    records_out: int  # scored runs written (or that would be, in a dry run)
    ledger_rows: int  # model_trust lines aggregated into the ledger instead of scored
    ledger_entries: int
    matrix: dict[str, dict[str, int]]  # stream -> category -> count, all four categories present
    per_category: dict[str, int]
    review_reasons: dict[str, int]  # needs_human_review rows by rule code (orphan, conflicting_parents, ...)
    inputs: list[Path]  # evidence files read
    outputs: list[Path]  # scored files and the ledger
    files_written: int  # replaced because their bytes changed (would be, in a dry run)
    files_unchanged: int
    removed: list[Path] = field(default_factory=list)  # stale scored files (would be, in a dry run)

    @property
    def files_removed(self) -> int:
        return len(self.removed)

    @property
    def specific(self) -> int:
        return self.records_out - self.per_category.get(REVIEW, 0)

    @property
    def specific_share(self) -> float:
        """Share of scored runs with a specific category (not needs_human_review)."""
        return self.specific / self.records_out if self.records_out else 0.0

    @property
    def review_share(self) -> float:
        return self.per_category.get(REVIEW, 0) / self.records_out if self.records_out else 0.0

    def render_table(self) -> str:
        return render_matrix(self.matrix, self.scorer_version, self.ledger_rows, self.ledger_entries)


# ---------------------------------------------------------------------------------------------
# the evidence tree
# ---------------------------------------------------------------------------------------------


def evidence_files(layout: Layout) -> list[Path]:
    """Partition files, sorted by relative path, so every pass reads them in the same order."""
    if not layout.evidence_dir.is_dir():
        return []
    found = (p for p in layout.evidence_dir.glob(PARTITION_GLOB) if p.is_file() and not p.name.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(layout.evidence_dir).as_posix())


def scored_path(layout: Layout, evidence_file: Path) -> Path:
    return layout.scored_dir / evidence_file.relative_to(layout.evidence_dir)


def is_ledger_stream(stream: str) -> bool:
    return stream_class(stream) == "ledger"


def iter_evidence(layout: Layout, path: Path) -> Iterator[EvidenceRecord]:
    """Every line of one evidence file as a validated record, or ``EvidenceError``."""
    stream = path.stem
    where = layout.relative(path)
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = EvidenceRecord.model_validate(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise EvidenceError(f"{where}:{number}: not JSON ({exc})") from None
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(part) for part in first["loc"]) or "record"
                raise EvidenceError(f"{where}:{number}: not an EvidenceRecord ({loc}: {first['msg']})") from None
            if record.stream != stream:
                raise EvidenceError(f"{where}:{number}: a {record.stream} record in the {stream} file")
            yield record


def build_parent_index(layout: Layout, files: list[Path]) -> ParentIndex:
    """Pass 1: every verdict row's category, by task_id and (audits) by finding_id."""
    index = ParentIndex()
    for path in files:
        if not is_parent_stream(path.stem):
            continue
        for record in iter_evidence(layout, path):
            judgement = judge_record(record)
            finding_id = (record.markers.finding_id or record.source_id) if record.stream == "audits" else None
            index.add(record.id, judgement.category, record.task_id, finding_id)
    return index


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


def _write_if_changed(path: Path, data: bytes, dry_run: bool) -> bool:
    """True if ``path`` does not already hold exactly ``data`` (and, unless dry, now does)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    if not dry_run:
        atomic_write_bytes(path, data)
    return True


def _stale_scored_files(layout: Layout, expected: set[Path]) -> list[Path]:
    if not layout.scored_dir.is_dir():
        return []
    present = (p for p in layout.scored_dir.glob(PARTITION_GLOB) if p.is_file() and not p.name.startswith("."))
    return sorted((p for p in present if p not in expected), key=lambda p: p.as_posix())


def _remove(layout: Layout, paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        parent = path.parent
        # Drop the day/month/year folders the removal emptied, never the scored-runs root.
        while parent != layout.scored_dir and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def score_evidence_tree(layout: Layout, scorer_version: str = SCORER_VERSION, dry_run: bool = False) -> ScoreResult:
    files = evidence_files(layout)
    parents = build_parent_index(layout, files)

    ledger = LedgerBuilder()
    matrix: dict[str, dict[str, int]] = {}
    review_reasons: dict[str, int] = {}
    records_in = records_out = written = unchanged = 0
    outputs: list[Path] = []

    for path in files:
        if is_ledger_stream(path.stem):
            for record in iter_evidence(layout, path):
                records_in += 1
                markers = record.markers
                try:
                    ledger.add(
                        record.id,
                        markers.model,
                        markers.task_kind,
                        markers.trust_score,
                        record.event_at,
                        markers.window_start,
                        markers.window_end,
                    )
                except LedgerError as exc:
                    raise EvidenceError(f"{layout.relative(path)}: {exc}") from None
            continue
        chunks: list[bytes] = []
        for record in iter_evidence(layout, path):
            records_in += 1
            judgement = judge_record(record, parents)
            run = stamp(record, judgement, scorer_version)  # builds a validated ScoredRun
            chunks.append(dumps_line(run.model_dump(mode="json")))
            row = matrix.setdefault(record.stream, dict.fromkeys(CATEGORIES, 0))
            row[judgement.category] += 1
            if not judgement.is_specific:
                review_reasons[judgement.code] = review_reasons.get(judgement.code, 0) + 1
        records_out += len(chunks)
        target = scored_path(layout, path)
        outputs.append(target)
        if _write_if_changed(target, b"".join(chunks), dry_run):
            written += 1
        else:
            unchanged += 1

    entries = ledger.entries()
    outputs.append(layout.model_ledger)
    if _write_if_changed(layout.model_ledger, ledger_bytes(entries), dry_run):
        written += 1
    else:
        unchanged += 1

    stale = _stale_scored_files(layout, set(outputs))
    if not dry_run:
        _remove(layout, stale)

    per_category = dict.fromkeys(CATEGORIES, 0)
    for row in matrix.values():
        for category, count in row.items():
            per_category[category] += count
    return ScoreResult(
        scorer_version=scorer_version,
        dry_run=dry_run,
        records_in=records_in,
        records_out=records_out,
        ledger_rows=ledger.rows,
        ledger_entries=len(entries),
        matrix=matrix,
        per_category=per_category,
        review_reasons=dict(sorted(review_reasons.items())),
        inputs=files,
        outputs=outputs,
        files_written=written,
        files_unchanged=unchanged,
        removed=stale,
    )
