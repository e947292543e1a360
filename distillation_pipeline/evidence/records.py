"""From one parsed source row to one EvidenceRecord (as the dict we write), or a RowError.

Every record the collector writes is a valid ``EvidenceRecord``. Running pydantic over each
dict costs more than building it, so ``EvidenceBuilder.validate`` first asks ``proven_valid``,
a check of the exact types of every field that pydantic would accept without question; only a
record it cannot vouch for goes through ``EvidenceRecord.model_validate``, which decides (and
words the skip reason). ``proven_valid`` is written against one version of the schema: when
``schemas.py`` changes the three models it reads, it turns itself off (``FAST_CHECK_ENABLED``)
and every record is validated by pydantic again until someone re-reads this file.
"""

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from distillation_pipeline.evidence.streams import STREAMS, RowError
from distillation_pipeline.lib.hashing import sha256_hex
from distillation_pipeline.lib.timestamps import iso_utc
from distillation_pipeline.schemas import EvidenceRecord, Provenance, ScoringMarkers

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


def _iso(moment: datetime) -> str:
    """``iso_utc`` without its conversion for the datetimes we parse, which are UTC already."""
    if moment.tzinfo is UTC:
        return moment.isoformat()[:-6] + "Z"  # "+00:00" can only be the suffix
    return iso_utc(moment)


class EvidenceBuilder:
    """Builds the records of one stream from one source file in one run.

    What is the same for every row (the stream's spec, the source file, ``recorded_at``) is
    worked out once here, not once per row.
    """

    def __init__(self, stream: str, source_file: str, recorded_at: datetime | str) -> None:
        self.stream = stream
        self.spec = STREAMS[stream]
        self.source_file = source_file
        self.recorded_iso = recorded_at if isinstance(recorded_at, str) else iso_utc(recorded_at)
        self._id_prefix = f"{stream}:"
        self._fields = self.spec.fields
        # Row-independent parts of the record, checked against the schema once, not per row.
        self._trusted = (
            (stream, self.spec.source_class, source_file, self.recorded_iso)
            if FAST_CHECK_ENABLED and _constants_valid(stream, self.spec.source_class, source_file, self.recorded_iso)
            else None
        )

    def build(self, row: dict[str, Any], sig: str, line_offset: int) -> dict[str, Any]:
        """The JSON-mode dict of an EvidenceRecord. Raises RowError for a row that cannot be one."""
        source_id, task_id, event_at, prompt, response, content, markers = self._fields(row)
        return {
            "schema_version": 1,
            "id": self._id_prefix + sig[:20],
            "stream": self.stream,
            "source_class": self.spec.source_class,
            "source_id": source_id,
            "task_id": task_id,
            "event_at": _iso(event_at),
            "prompt": prompt,
            "response": response,
            "content": content,
            "markers": {
                key: _iso(value) if isinstance(value, datetime) else value
                for key, value in markers.items()
                if value is not None
            },
            "raw": row,
            "provenance": {
                "source_file": self.source_file,
                "line_offset": line_offset,
                "sig_hash": sig,
                "recorded_at": self.recorded_iso,
            },
        }

    def validate(self, record: dict[str, Any]) -> None:
        """Raise ValidationError unless ``record`` is a valid EvidenceRecord."""
        if self._trusted is None or not proven_valid(record, self._trusted):
            EvidenceRecord.model_validate(record)


def build_evidence(
    stream: str,
    row: dict[str, Any],
    sig: str,
    source_file: str,
    line_offset: int,
    recorded_at: datetime | str,
) -> dict[str, Any]:
    """The JSON-mode dict of an EvidenceRecord. Raises RowError for a row that cannot be one."""
    return EvidenceBuilder(stream, source_file, recorded_at).build(row, sig, line_offset)


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


# ---------------------------------------------------------------------------------------------
# The fast check: a sufficient (not necessary) condition for EvidenceRecord.model_validate to pass
# ---------------------------------------------------------------------------------------------

# What the check below was written against: the fields, config and validators of the three
# models it reads (memory addresses stripped). A change to any of them turns the check off.
SCHEMA_FINGERPRINT = "b378f54594e2131055bdbb03cf455b97c6e98841bbcb68b5b95cbae00c922757"


def schema_fingerprint() -> str:
    parts = []
    for model in (EvidenceRecord, ScoringMarkers, Provenance):
        parts += [model.__name__, repr(model.model_fields), repr(model.model_config), repr(model.__pydantic_decorators__)]
    return sha256_hex(re.sub(r" at 0x[0-9a-f]+", "", "\n".join(parts)).encode("utf-8"))


FAST_CHECK_ENABLED = schema_fingerprint() == SCHEMA_FINGERPRINT

_RECORD_KEYS = frozenset(
    ("schema_version", "id", "stream", "source_class", "source_id", "task_id", "event_at", "prompt", "response", "content", "markers", "raw", "provenance")
)
_PROVENANCE_KEYS = frozenset(("source_file", "line_offset", "sig_hash", "recorded_at"))
_STREAM_NAMES = frozenset(EvidenceRecord.model_fields["stream"].annotation.__args__)
_SOURCE_CLASSES = frozenset(EvidenceRecord.model_fields["source_class"].annotation.__args__)
_SIG = re.compile(r"[0-9a-f]{64}")
# RFC 3339 in UTC, the shape iso_utc writes; fromisoformat then proves it is a real date.
_ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")


def _is_iso_z(value: object) -> bool:
    if type(value) is not str or not _ISO_Z.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


def _all_str(value: object) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _all_bool(value: object) -> bool:
    return type(value) is list and all(type(item) is bool for item in value)


# ScoringMarkers: every field is optional and unconstrained beyond its type, so a value of the
# exact type is accepted. Exact types: bool is an int subclass, and a subclass may do anything.
_MARKER_CHECKS: dict[str, Any] = {
    **{key: int for key in ("accepted_on_attempt", "gap_signals")},
    **{key: bool for key in ("never_accepted", "observer_verdict_present", "validation_passed", "escalated")},
    **{key: str for key in ("verdict", "severity", "observer_verdict", "status", "finding_id", "model", "task_kind")},
    **{key: float for key in ("latency_ms", "grounded_fraction", "trust_score")},  # inf and nan included
    "failure_markers": _all_str,
    "events_ok": _all_bool,
    "window_start": _is_iso_z,
    "window_end": _is_iso_z,
}
assert set(_MARKER_CHECKS) == set(ScoringMarkers.model_fields)


def _constants_valid(stream: str, source_class: str, source_file: str, recorded_iso: str) -> bool:
    if stream not in _STREAM_NAMES or source_class not in _SOURCE_CLASSES or not _is_iso_z(recorded_iso):
        return False
    try:
        Provenance.model_validate({"source_file": source_file, "line_offset": 0, "sig_hash": "0" * 64, "recorded_at": recorded_iso})
    except ValidationError:
        return False
    return True


def proven_valid(record: dict[str, Any], trusted: tuple[str, str, str, str]) -> bool:
    """True only for a record ``EvidenceRecord.model_validate`` accepts; False means "ask it".

    ``trusted`` is (stream, source class, source file, recorded_at) as ``_constants_valid``
    accepted them, once per builder; the record must carry exactly those, and everything that
    depends on the row is checked here.
    """
    stream, source_class, source_file, recorded_iso = trusted
    if record.keys() != _RECORD_KEYS or type(record["schema_version"]) is not int or record["schema_version"] != 1:
        return False
    if record["stream"] != stream or record["source_class"] != source_class:
        return False
    record_id = record["id"]
    if type(record_id) is not str or not record_id:
        return False
    for key in ("source_id", "task_id", "prompt", "response", "content"):
        value = record[key]
        if value is not None and type(value) is not str:
            return False
    if not _is_iso_z(record["event_at"]):
        return False
    raw = record["raw"]
    if type(raw) is not dict or not all(type(key) is str for key in raw):
        return False
    markers = record["markers"]
    if type(markers) is not dict:
        return False
    for key, value in markers.items():
        check = _MARKER_CHECKS.get(key)
        if check is None:
            return False
        if value is None:
            continue
        if type(check) is type:
            if type(value) is not check:
                return False
        elif not check(value):
            return False
    provenance = record["provenance"]
    if type(provenance) is not dict or provenance.keys() != _PROVENANCE_KEYS:
        return False
    line_offset = provenance["line_offset"]
    sig = provenance["sig_hash"]
    return (
        type(line_offset) is int
        and line_offset >= 0
        and type(sig) is str
        and _SIG.fullmatch(sig) is not None
        and provenance["source_file"] == source_file
        and provenance["recorded_at"] == recorded_iso
    )


__all__ = ["EvidenceBuilder", "RowError", "build_evidence", "evidence_id", "is_score_ready", "proven_valid"]
