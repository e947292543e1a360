"""Evidence and scored-run trees for the exporter tests, built from the schema models.

The exporters read only the mirrored files, so these fixtures write them directly (never via
the collector or scorer): each ``Run`` is an ``EvidenceRecord`` and its ``ScoredRun``,
written to ``data/evidence/YYYY/MM/DD/<stream>.jsonl`` and the same path under
``data/scored-runs/``, one line each, in the order given.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillation_pipeline.evidence.streams import STREAMS
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.lib.hashing import sig_hash
from distillation_pipeline.lib.jsonl import dumps_line
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import EvidenceRecord, Provenance, ScoredRun

RECORDED_AT = datetime(2026, 11, 1, tzinfo=UTC)
EVENT_AT = datetime(2026, 10, 2, 10, 0, tzinfo=UTC)
MANIFEST = ["services/router/provider_adapter.py", "services/router/tests/test_adapter.py", "README.md"]


@dataclass(frozen=True)
class Run:
    evidence: EvidenceRecord
    scored: ScoredRun

    @property
    def id(self) -> str:
        return self.evidence.id


def make_run(
    key: str,
    *,
    category: str = "accepted",
    stream: str = "scrum_reviews",
    task_id: str | None = "task-1",
    prompt: str | None = "Audit provider routing",
    response: str | None = None,
    content: str | None = None,
    event_at: datetime = EVENT_AT,
    recorded_at: datetime = RECORDED_AT,
    evidence_id: str | None = None,
) -> Run:
    """One evidence record and its verdict. ``key`` makes the raw row (and so the id) unique."""
    if response is None and content is None:
        response = f"Checked services/router/provider_adapter.py for {key}; fallback order is correct."
    raw: dict[str, Any] = {"key": key, "task_id": task_id, "prompt": prompt, "response": response, "content": content}
    sig = sig_hash(raw)
    run_id = evidence_id or f"{stream}:{sig[:20]}"
    provenance = Provenance(
        source_file=f"data/_kb/{stream}.jsonl", line_offset=0, sig_hash=sig, recorded_at=recorded_at
    )
    source_class = STREAMS[stream].source_class
    evidence = EvidenceRecord(
        id=run_id, stream=stream, source_class=source_class, source_id=key, task_id=task_id, event_at=event_at,  # type: ignore[arg-type]
        prompt=prompt, response=response, content=content, raw=raw, provenance=provenance,
    )  # fmt: skip
    scored = ScoredRun(
        id=run_id, evidence_id=run_id, stream=stream, source_class=source_class, task_id=task_id,  # type: ignore[arg-type]
        category=category, reasons=["fixture"], scorer_version="fixture-1", event_at=event_at, provenance=provenance,  # type: ignore[arg-type]
    )  # fmt: skip
    return Run(evidence, scored)


def relative_file(run: Run) -> str:
    day = run.evidence.event_at
    return f"{day:%Y/%m/%d}/{run.evidence.stream}.jsonl"


def write_runs(layout: Layout, runs: list[Run], *, scored: bool = True) -> list[str]:
    """Write the mirrored files, appending to any that exist. Returns the relative paths touched."""
    lines: dict[str, tuple[list[bytes], list[bytes]]] = defaultdict(lambda: ([], []))
    for run in runs:
        evidence_lines, scored_lines = lines[relative_file(run)]
        evidence_lines.append(dumps_line(run.evidence.model_dump(mode="json")))
        scored_lines.append(dumps_line(run.scored.model_dump(mode="json")))
    for relative, (evidence_lines, scored_lines) in lines.items():
        append_lines(layout.evidence_dir / relative, evidence_lines)
        if scored:
            append_lines(layout.scored_dir / relative, scored_lines)
    return sorted(lines)


def append_lines(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(b"".join(lines))


def append_json(path: Path, row: dict[str, Any]) -> None:
    append_lines(path, [orjson.dumps(row) + b"\n"])


def write_manifest(layout: Layout, paths: list[str] = MANIFEST) -> None:
    layout.kb_dir.mkdir(parents=True, exist_ok=True)
    layout.repo_manifest.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def later(hours: int) -> datetime:
    return RECORDED_AT + timedelta(hours=hours)


def reasons(path: Path) -> list[str]:
    return [row["reason"] for row in read_jsonl(path)]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """An empty root in the test's temporary directory."""
    return Layout.at(tmp_path / "root")


def conserved(result: ExportResult) -> ExportResult:
    """Assert the export's counts add up (its balance equation), and pass the result on."""
    ok, equation = result.balance()
    assert ok, equation
    return result
