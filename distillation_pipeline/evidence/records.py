"""From one parsed source row to one EvidenceRecord (as the dict we write), or a RowError.

Every record the collector writes is a valid ``EvidenceRecord``. Running pydantic over each
dict costs more than building it, so ``EvidenceBuilder.make`` first asks ``_vouched``, a check
of the exact types of the row-dependent values, each of a type pydantic accepts without
question; only a record it cannot vouch for goes through ``EvidenceRecord.model_validate``,
which decides (and words the skip reason). ``_vouched`` is written against one version of the
schema: when ``schemas.py`` changes the three models it reads, it turns itself off
(``FAST_CHECK_ENABLED``) and every record is validated by pydantic again until someone
re-reads this file.
"""

import re
from collections.abc import Callable
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
    """``iso_utc`` of the datetimes we parse, which are UTC already: the same text, built quicker.

    isoformat writes YYYY-MM-DDTHH:MM:SS, then .ffffff only when there are microseconds, then
    the offset, which iso_utc turns into Z.
    """
    if moment.tzinfo is not UTC:
        return iso_utc(moment)
    micro = moment.microsecond
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    return text + (".%06dZ" % micro if micro else "Z")


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
        # The row-independent parts of every record, checked against the schema once: only
        # then may ``_vouched`` stand in for pydantic on the parts that depend on the row.
        self.fast = FAST_CHECK_ENABLED and _constants_valid(stream, self.spec.source_class, source_file, self.recorded_iso)

    def build(self, row: dict[str, Any], sig: str, line_offset: int) -> dict[str, Any]:
        """The JSON-mode dict of an EvidenceRecord, unvalidated. Raises RowError for a row that cannot be one."""
        return self._record(self._fields(row), row, sig, line_offset)

    def make(self, row: dict[str, Any], digest: bytes, line_offset: int) -> dict[str, Any]:
        """The JSON-mode dict of a valid EvidenceRecord; RowError or ValidationError if there is none.

        ``row`` is a JSON object as ``orjson.loads`` returns it (so its keys are strings);
        ``digest`` the raw sha256 of its canonical JSON (``sig_hash`` is its hex form).
        """
        fields = self._fields(row)
        sig = digest.hex()
        record = self._record(fields, row, sig, line_offset)
        if not (self.fast and _vouched(fields, row, digest, line_offset)):
            EvidenceRecord.model_validate(record)
        return record

    def _record(self, fields: tuple, row: dict[str, Any], sig: str, line_offset: int) -> dict[str, Any]:
        source_id, task_id, event_at, prompt, response, content, markers = fields
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


def score_ready_check(stream: str) -> Callable[[dict[str, Any]], bool]:
    """``is_score_ready`` for the records of one stream, with the per-stream choice made once."""
    if stream in ("audit_discrepancies", "model_trust", "mode_experiments"):
        return is_score_ready
    wanted = _READY_MARKERS.get(stream)
    if wanted is None:
        return lambda record: bool(record.get("task_id"))
    if len(wanted) == 1:
        (key,) = wanted
        return lambda record: record["markers"].get(key) is not None
    first, second = wanted
    return lambda record: (markers := record["markers"]).get(first) is not None or markers.get(second) is not None


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

_STREAM_NAMES = frozenset(EvidenceRecord.model_fields["stream"].annotation.__args__)
_SOURCE_CLASSES = frozenset(EvidenceRecord.model_fields["source_class"].annotation.__args__)
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


def _is_datetime(value: object) -> bool:
    return type(value) is datetime  # written by _iso: an RFC 3339 string pydantic reads back


# ScoringMarkers: every field is optional and unconstrained beyond its type, so a value of the
# exact type is accepted. Exact types: bool is an int subclass, and a subclass may do anything.
_MARKER_CHECKS: dict[str, Any] = {
    **{key: int for key in ("accepted_on_attempt", "gap_signals")},  # any size: pydantic takes big ints
    **{key: bool for key in ("never_accepted", "observer_verdict_present", "validation_passed", "escalated")},
    **{key: str for key in ("verdict", "severity", "observer_verdict", "status", "finding_id", "model", "task_kind")},
    **{key: float for key in ("latency_ms", "grounded_fraction", "trust_score")},  # inf and nan included
    "failure_markers": _all_str,
    "events_ok": _all_bool,
    "window_start": _is_datetime,
    "window_end": _is_datetime,
}
assert set(_MARKER_CHECKS) == set(ScoringMarkers.model_fields)


def _constants_valid(stream: str, source_class: str, source_file: str, recorded_iso: str) -> bool:
    """stream, source_class, provenance.source_file and provenance.recorded_at, once per builder."""
    if stream not in _STREAM_NAMES or source_class not in _SOURCE_CLASSES or not _is_iso_z(recorded_iso):
        return False
    try:
        Provenance.model_validate({"source_file": source_file, "line_offset": 0, "sig_hash": "0" * 64, "recorded_at": recorded_iso})
    except ValidationError:
        return False
    return True


def _vouched(fields: tuple, row: object, digest: object, line_offset: object) -> bool:
    """True only if the record ``_record`` makes of these is one ``EvidenceRecord`` accepts.

    False means "ask pydantic". What this does not look at is fixed by ``_record`` itself:
    schema_version 1, the key sets, an id of ``stream:`` + 20 characters, the builder's
    constants (``_constants_valid``), datetimes written by ``_iso``, and the keys of ``raw``
    (a JSON object's keys are strings).
    """
    source_id, task_id, event_at, prompt, response, content, markers = fields
    if type(event_at) is not datetime or type(row) is not dict or type(markers) is not dict:
        return False
    for value in (source_id, task_id, prompt, response, content):
        if value is not None and type(value) is not str:
            return False
    if type(line_offset) is not int or line_offset < 0:
        return False
    if type(digest) is not bytes or len(digest) != 32:  # its .hex() matches ^[0-9a-f]{64}$
        return False
    for key, value in markers.items():
        if value is None:  # dropped by _record
            continue
        check = _MARKER_CHECKS.get(key)
        if check is None:
            return False
        if type(check) is type:
            if type(value) is not check:
                return False
        elif not check(value):
            return False
    return True


__all__ = ["EvidenceBuilder", "RowError", "build_evidence", "evidence_id", "is_score_ready", "score_ready_check"]
