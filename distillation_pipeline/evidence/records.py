"""From one parsed source row to one EvidenceRecord (as the dict we write), or a RowError."""

from datetime import datetime
from typing import Any

from distillation_pipeline.evidence.streams import STREAMS, RowError
from distillation_pipeline.lib.timestamps import iso_utc

# What makes a record score-ready: the markers the scorer needs to give a specific category.
# Extraction rows are ready when they carry the key they join on.
_READY_MARKERS: dict[str, tuple[str, ...]] = {
    "scrum_reviews": ("accepted_on_attempt", "never_accepted"),
    "observer_reviews": ("verdict",),
    "audits": ("severity", "verdict"),
    "contract_analyses": ("failure_markers", "observer_verdict"),
    "replay_runs": ("validation_passed",),
    "auto_apply": ("status",),
    "outcomes": ("events_ok", "gap_signals"),
    "audit_facts": ("finding_id",),
}


def evidence_id(stream: str, sig: str) -> str:
    return f"{stream}:{sig[:20]}"


def build_evidence(
    stream: str,
    row: dict[str, Any],
    sig: str,
    source_file: str,
    line_offset: int,
    recorded_at: datetime,
) -> dict[str, Any]:
    """The JSON-mode dict of an EvidenceRecord. Raises RowError for a row that cannot be one."""
    spec = STREAMS[stream]
    normalised = spec.normalise(row)
    markers = {
        key: iso_utc(value) if isinstance(value, datetime) else value for key, value in normalised.markers.items()
    }
    return {
        "schema_version": 1,
        "id": evidence_id(stream, sig),
        "stream": stream,
        "source_class": spec.source_class,
        "source_id": normalised.source_id,
        "task_id": normalised.task_id,
        "event_at": iso_utc(normalised.event_at),
        "prompt": normalised.prompt,
        "response": normalised.response,
        "content": normalised.content,
        "markers": markers,
        "raw": row,
        "provenance": {
            "source_file": source_file,
            "line_offset": line_offset,
            "sig_hash": sig,
            "recorded_at": iso_utc(recorded_at),
        },
    }


def is_score_ready(record: dict[str, Any]) -> bool:
    stream = record["stream"]
    if stream == "audit_discrepancies":
        return True
    if stream == "model_trust":
        return False
    markers = record["markers"]
    if stream == "mode_experiments":
        # the scorer decides on grounding, a >120 s latency, or an empty response
        return (
            markers.get("grounded_fraction") is not None
            or (markers.get("latency_ms") or 0) > 120_000
            or not (record.get("response") or "").strip()
        )
    wanted = _READY_MARKERS.get(stream)
    if wanted is None:  # task_id-joined extraction streams
        return bool(record.get("task_id"))
    return any(markers.get(key) is not None for key in wanted)


__all__ = ["RowError", "build_evidence", "evidence_id", "is_score_ready"]
