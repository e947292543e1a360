"""The source contract of spec section 2, one ``StreamSpec`` per stream.

A spec says which class a stream is scored as, which field is the row's own id, where its
event time is, and how its text and scoring markers are read. ``normalise`` raises
``RowError`` (with a reason code) for a row that cannot become evidence; the collector turns
that into a skip record. Values are coerced the way real logs need (ids and numbers that
arrive as strings), never guessed: a marker of the wrong type is a schema violation.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from distillation_pipeline.lib.timestamps import _MAX_YEAR, _MIN_YEAR, TimestampError, parse_timestamp

SOURCE_CLASSES = ("verdict", "telemetry", "extraction", "ledger")


class RowError(ValueError):
    """A row that cannot become evidence. ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Normalised:
    source_id: str | None
    task_id: str | None
    event_at: Any  # datetime
    prompt: str | None
    response: str | None
    content: str | None
    markers: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Coercion helpers: each raises RowError("schema_violation", ...) on a wrong type.
# ---------------------------------------------------------------------------------------------


def _ident(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if type(value) is str:  # nearly every id: skip the checks below (str(value) is value)
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError("schema_violation", f"{key} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    return text or None


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if type(value) is str:  # nearly every text: skip the checks below (str(value) is value)
        return value
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise RowError("schema_violation", f"{key} must be text, got {type(value).__name__}")
    return str(value)


def _int(row: Mapping[str, Any], key: str, minimum: int | None = None) -> int | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise RowError("schema_violation", f"{key} must be an integer, got bool")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise RowError("schema_violation", f"{key} must be an integer, got {value[:40]!r}") from None
    if not isinstance(value, int):
        raise RowError("schema_violation", f"{key} must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise RowError("schema_violation", f"{key} must be >= {minimum}, got {value}")
    return value


def _float(value: Any, key: str, lo: float | None = None, hi: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise RowError("schema_violation", f"{key} must be a number, got bool")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RowError("schema_violation", f"{key} must be a number, got {value[:40]!r}") from None
    if not isinstance(value, (int, float)) or value != value:
        raise RowError("schema_violation", f"{key} must be a number")
    value = float(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RowError("schema_violation", f"{key} must be in [{lo}, {hi}], got {value}")
    return value


def _choice(row: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError("schema_violation", f"{key} must be one of {allowed}")
    normalised = value.strip().lower()
    if normalised not in allowed:
        raise RowError("schema_violation", f"{key}={value[:40]!r} not in {allowed}")
    return normalised


def _join(*parts: str | None) -> str | None:
    present = [part for part in parts if part and part.strip()]
    return "\n\n".join(present) if present else None


# ---------------------------------------------------------------------------------------------
# Per-stream readers: (row) -> (prompt, response, content, markers)
# ---------------------------------------------------------------------------------------------

TextAndMarkers = tuple[str | None, str | None, str | None, dict[str, Any]]


def _scrum_reviews(row: Mapping[str, Any]) -> TextAndMarkers:
    markers: dict[str, Any] = {"model": _ident(row, "model")}
    if "accepted_on_attempt" in row:
        attempt = _int(row, "accepted_on_attempt", minimum=1)
        markers["accepted_on_attempt"] = attempt
        markers["never_accepted"] = attempt is None
    return _text(row, "task"), _text(row, "review"), None, markers


def _observer_reviews(row: Mapping[str, Any]) -> TextAndMarkers:
    markers = {"verdict": _choice(row, "verdict", ("accept", "reject", "cycle")), "model": _ident(row, "model")}
    return _text(row, "task"), _text(row, "output"), None, markers


def _audits(row: Mapping[str, Any]) -> TextAndMarkers:
    markers = {
        "severity": _choice(row, "severity", ("info", "low", "medium", "high", "critical")),
        "verdict": _choice(row, "verdict", ("pass", "fail")),
        "finding_id": _ident(row, "finding_id"),
    }
    return None, None, _join(_text(row, "topic"), _text(row, "evidence")), markers


def _contract_analyses(row: Mapping[str, Any]) -> TextAndMarkers:
    markers: dict[str, Any] = {}
    failure_markers = row.get("failure_markers")
    if failure_markers is not None:
        if not isinstance(failure_markers, list) or not all(isinstance(m, str) for m in failure_markers):
            raise RowError("schema_violation", "failure_markers must be a list of strings")
        markers["failure_markers"] = [m for m in failure_markers if m.strip()]
    markers["observer_verdict"] = _choice(row, "observer_verdict", ("accept", "reject"))
    markers["observer_verdict_present"] = "observer_verdict" in row
    return _text(row, "contract"), _text(row, "analysis"), None, markers


def _audit_discrepancies(row: Mapping[str, Any]) -> TextAndMarkers:
    return _text(row, "task"), _text(row, "claim"), None, {}


def _replay_runs(row: Mapping[str, Any]) -> TextAndMarkers:
    markers: dict[str, Any] = {}
    for key in ("validation_passed", "escalated"):
        value = row.get(key)
        if value is not None and not isinstance(value, bool):
            raise RowError("schema_violation", f"{key} must be a boolean")
        markers[key] = value
    models = row.get("models_called")
    if isinstance(models, list) and models and isinstance(models[0], str):
        markers["model"] = models[0]
    return _text(row, "task"), _text(row, "output"), None, markers


def _auto_apply(row: Mapping[str, Any]) -> TextAndMarkers:
    status = row.get("status")
    if status is not None and not isinstance(status, str):
        raise RowError("schema_violation", "status must be a string")
    return _text(row, "task"), _text(row, "patch"), None, {"status": status.strip().lower() if status else None}


def _outcomes(row: Mapping[str, Any]) -> TextAndMarkers:
    markers: dict[str, Any] = {"gap_signals": _int(row, "gap_signals", minimum=0)}
    events = row.get("events")
    if events is not None:
        if not isinstance(events, list):
            raise RowError("schema_violation", "events must be a list of {name, ok}")
        oks = []
        for event in events:
            if not isinstance(event, dict) or not isinstance(event.get("ok"), bool):
                raise RowError("schema_violation", "each event must be an object with a boolean ok")
            oks.append(event["ok"])
        markers["events_ok"] = oks
    return None, None, _text(row, "summary"), markers


def _mode_experiments(row: Mapping[str, Any]) -> TextAndMarkers:
    results = row.get("validation_results")
    if results is not None and not isinstance(results, dict):
        raise RowError("schema_violation", "validation_results must be an object")
    markers = {
        "latency_ms": _float(row.get("latency_ms"), "latency_ms", lo=0),
        "grounded_fraction": _float((results or {}).get("grounded_fraction"), "grounded_fraction", 0.0, 1.0),
        "model": _ident(row, "model"),
    }
    return _text(row, "prompt"), _text(row, "response"), None, markers


def _audit_facts(row: Mapping[str, Any]) -> TextAndMarkers:
    return None, None, _text(row, "fact"), {"finding_id": _ident(row, "finding_id")}


def _distilled(row: Mapping[str, Any]) -> TextAndMarkers:
    return None, None, _text(row, "text"), {}


def _observer_escalations(row: Mapping[str, Any]) -> TextAndMarkers:
    return None, None, _join(_text(row, "reason"), _text(row, "context")), {}


def _model_trust(row: Mapping[str, Any]) -> TextAndMarkers:
    markers: dict[str, Any] = {
        "model": _ident(row, "model"),
        "task_kind": _ident(row, "task_kind"),
        "trust_score": _float(row.get("trust_score"), "trust_score", 0.0, 1.0),
    }
    for key in ("window_start", "window_end"):
        if row.get(key) is not None:
            try:
                markers[key] = _parse_timestamp(row[key])
            except TimestampError as exc:
                raise RowError("schema_violation", f"{key}: {exc}") from None
    if markers["model"] is None or markers["task_kind"] is None or markers["trust_score"] is None:
        raise RowError("missing_required_field", "model_trust needs model, task_kind and trust_score")
    return None, None, None, markers


def _event_time(value: str) -> datetime | None:
    """``parse_timestamp`` of an ISO string, quicker; None when it must decide (or refuse) itself.

    A string with a ':' is never a number, so ``parse_timestamp`` skips straight to its ISO
    branch, which this repeats step for step for the values it accepts. The value is first
    handed to ``fromisoformat`` as it is: since Python 3.11 that reads a trailing "Z" itself,
    and a string it takes whole needs neither strip() nor the "Z" -> "+00:00" rewrite (0.55x
    the time per ISO row; ``test_timestamps.py`` holds it to the step-for-step version).
    """
    if ":" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed if _MIN_YEAR <= parsed.year <= _MAX_YEAR else None


def _parse_timestamp(value: object) -> datetime:
    """``parse_timestamp``, but an ISO time whose UTC form falls outside datetime's range
    (year 1 with a positive offset, year 9999 with a negative one) is a TimestampError too:
    ``astimezone`` raises OverflowError there, which took the whole collect run down."""
    try:
        return parse_timestamp(value)
    except OverflowError:
        raise TimestampError(f"timestamp out of range: {str(value)[:64]!r}") from None


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSpec:
    name: str
    source_class: str
    id_field: str
    time_fields: tuple[str, ...]
    read: Callable[[Mapping[str, Any]], TextAndMarkers]
    requires_task_id: bool = True
    required: tuple[str, ...] = field(default=())

    def normalise(self, row: Mapping[str, Any]) -> Normalised:
        source_id, task_id, event_at, prompt, response, content, markers = self.fields(row)
        return Normalised(source_id, task_id, event_at, prompt, response, content, {k: v for k, v in markers.items() if v is not None})

    def fields(self, row: Mapping[str, Any]) -> tuple[str, str | None, Any, str | None, str | None, str | None, dict[str, Any]]:
        """What ``normalise`` returns, as a plain tuple, with markers still holding None values."""
        source_id = _ident(row, self.id_field)
        if source_id is None:
            raise RowError("missing_required_field", f"{self.id_field} is missing")
        task_id = _ident(row, "task_id")
        if task_id is None and self.requires_task_id:
            raise RowError("missing_required_field", "task_id is missing")
        event_at = None
        for key in self.time_fields:
            value = row.get(key)
            if value is not None:
                event_at = _event_time(value) if type(value) is str else None
                if event_at is None:
                    try:
                        event_at = _parse_timestamp(value)
                    except TimestampError as exc:
                        raise RowError("bad_timestamp", f"{key}: {exc}") from None
                break
        else:
            raise RowError("missing_timestamp", f"none of {', '.join(self.time_fields)} is set")
        prompt, response, content, markers = self.read(row)
        return source_id, task_id, event_at, prompt, response, content, markers


_TS = ("ts", "created_at")
_CREATED = ("created_at", "ts")
_EXTRACTED = ("extracted_at", "created_at", "ts")

STREAMS: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in (
        StreamSpec("scrum_reviews", "verdict", "review_id", _CREATED, _scrum_reviews),
        StreamSpec("observer_reviews", "verdict", "review_id", _TS, _observer_reviews),
        StreamSpec("audits", "verdict", "finding_id", _TS, _audits),
        StreamSpec("contract_analyses", "verdict", "analysis_id", _CREATED, _contract_analyses),
        StreamSpec("audit_discrepancies", "verdict", "discrepancy_id", _TS, _audit_discrepancies),
        StreamSpec("replay_runs", "verdict", "run_id", _TS, _replay_runs),
        StreamSpec("auto_apply", "telemetry", "apply_id", _TS, _auto_apply),
        StreamSpec("outcomes", "telemetry", "outcome_id", _CREATED, _outcomes),
        StreamSpec("mode_experiments", "telemetry", "experiment_id", _TS, _mode_experiments),
        StreamSpec("audit_facts", "extraction", "fact_id", _TS, _audit_facts),
        StreamSpec("distilled_facts", "extraction", "id", _EXTRACTED, _distilled),
        StreamSpec("distilled_procedures", "extraction", "id", _EXTRACTED, _distilled),
        StreamSpec("distilled_config_hints", "extraction", "id", _EXTRACTED, _distilled),
        StreamSpec("observer_escalations", "extraction", "escalation_id", _TS, _observer_escalations),
        StreamSpec("model_trust", "ledger", "model", ("ts", "window_end"), _model_trust, requires_task_id=False),
    )
}

# Files in data/_kb/ that belong to the pipeline itself, not to any stream.
NON_STREAM_FILES = frozenset({"distillation_skips.jsonl"})
