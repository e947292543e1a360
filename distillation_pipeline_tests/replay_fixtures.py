"""Small RAG corpora for replay tests, written as exports/rag/playbooks.jsonl rows."""

from datetime import UTC, datetime
from pathlib import Path

from distillation_pipeline.lib.hashing import sha256_hex
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.schemas import ExportProvenance, RagSample


def rag_row(record_id: str, content: str, category: str = "accepted", title: str = "") -> RagSample:
    sig = sha256_hex(record_id.encode())
    return RagSample(
        id=record_id,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        task_id=f"task-{record_id}",
        title=title,
        content=content,
        source_category=category,
        provenance=ExportProvenance(
            evidence_id=f"scrum_reviews:{sig[:20]}",
            scored_run_id=f"scrum_reviews:{sig[:20]}",
            stream="scrum_reviews",
            source_file="data/_kb/scrum_reviews.jsonl",
            line_offset=0,
            sig_hash=sig,
            scorer_version="test",
        ),
    )


def write_rows(path: Path, rows: list[RagSample], extra_lines: list[bytes] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(dumps_line(row.model_dump(mode="json")) for row in rows) + b"".join(extra_lines)
    path.write_bytes(data)
    return path
