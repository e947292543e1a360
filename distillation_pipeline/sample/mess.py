"""The ways real logs go wrong (spec section 2), injected at low, realistic rates.

Three levels:

* row kinds, drawn per row by a ``MessSchedule``: a field turned into a string or the wrong type,
  a required field missing, invalid JSON, bytes that are not UTF-8, a blank line, an exact duplicate,
  a huge pasted log;
* file kinds, decided once by ``plan_files``: a BOM, a CRLF stretch, a torn last line, an empty
  file, a stream nobody registered;
* content the exporters must catch (credentials), drawn by the same schedule even when mess is off,
  because a clean row can still leak a key.

Every kind is also forced once early in the run, so each appears at least once even in a
2,000-row sample, whatever the seed.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from distillation_pipeline.sample.rows import TIME_FIELD

Row = dict[str, Any]

# Share of rows each row kind lands on (before deferral to a row it fits).
MESS_RATES = {
    "blank_line": 0.003,
    "malformed_json": 0.003,
    "non_utf8": 0.001,
    "duplicate": 0.004,
    "number_as_string": 0.004,
    "epoch_as_string": 0.003,
    "missing_required": 0.003,
    "wrong_type": 0.003,
}
SECRET_RATE = 0.003
FILE_KINDS = ("bom", "crlf", "truncated_tail", "huge_line", "unknown_stream", "empty_stream")
ROW_KINDS = tuple(MESS_RATES)

UNKNOWN_STREAM = "legacy_notes"
# The stream whose file is left empty. Extraction-class and redundant with distilled_*, so losing
# its rows costs the pipeline no code path (other than reading an empty file, which is the point).
EMPTY_STREAM = "observer_escalations"
HUGE_LINE_BYTES = 1 << 20  # "huge" means more than 1 MiB in one line

# Replay rows come from our own validated writer: only whole-line accidents happen to them.
LINE_ONLY_STREAMS = frozenset({"replay_runs"})
LINE_KINDS = frozenset({"blank_line", "malformed_json", "duplicate"})  # applied to bytes, not fields

# A private-use character marks where non-UTF-8 bytes go; it survives orjson unescaped.
NON_UTF8_MARK = "\ue000"
_NON_UTF8_MARK_BYTES = NON_UTF8_MARK.encode()
_NON_UTF8_BYTES = (b"caf\xe9", b"\x93quoted\x94", b"\xff\xfe", b"na\xc3 ve")  # latin-1, cp1252, junk, torn UTF-8
BLANK_LINES = (b"", b"   ", b"\t")


class MessSchedule:
    """Which row kinds hit the next row: a random draw, a forced first occurrence, or a deferral."""

    def __init__(self, rng: random.Random, rates: dict[str, float], forced: list[tuple[int, str]]) -> None:
        self._rng = rng
        self._cumulative: list[tuple[float, str]] = []
        total = 0.0
        for kind, rate in rates.items():
            total += rate
            self._cumulative.append((total, kind))
        self._total = total
        self._forced: dict[int, list[str]] = {}
        for position, kind in forced:
            self._forced.setdefault(position, []).append(kind)
        self._deferred: list[str] = []

    def kinds_for(self, event: int) -> list[str]:
        kinds = self._deferred
        self._deferred = []
        if event in self._forced:
            kinds += self._forced.pop(event)
        draw = self._rng.random()
        if draw < self._total:
            kinds.append(next(kind for cumulative, kind in self._cumulative if draw < cumulative))
        return kinds

    def defer(self, kind: str) -> None:
        """The kind does not fit this row (no such field): it lands on the next row it fits."""
        self._deferred.append(kind)


def build_schedule(rng: random.Random, rows: int, mess: bool, huge_lines: int) -> MessSchedule:
    rates = dict(MESS_RATES) if mess else {}
    rates["secret"] = SECRET_RATE
    early = max(1, rows // 2)  # forced kinds land in the first half, leaving room for deferrals
    forced = [(rng.randrange(early), kind) for kind in rates]
    if mess:
        forced += [(rng.randrange(early * 3 // 2), "huge_line") for _ in range(huge_lines)]
    return MessSchedule(rng, rates, forced)


def huge_line_count(rows: int) -> int:
    """Tiny on purpose: each one is more than a MiB."""
    return 1 + (rows >= 200_000) + (rows >= 1_000_000)


# --- file kinds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilePlan:
    bom_streams: frozenset[str] = frozenset()
    crlf_stream: str | None = None
    crlf_lines: range = range(0)  # line numbers (0-based) of crlf_stream written with CRLF
    torn_streams: tuple[str, ...] = ()
    empty_stream: str | None = None
    unknown_stream: str | None = None


def plan_files(rng: random.Random, expected_lines: dict[str, float], mess: bool) -> FilePlan:
    if not mess:
        return FilePlan()
    candidates = sorted(stream for stream in expected_lines if stream not in (EMPTY_STREAM, UNKNOWN_STREAM))
    crlf_stream = rng.choice(("scrum_reviews", "audits", "observer_reviews", "auto_apply"))
    others = [stream for stream in candidates if stream != crlf_stream]
    picked = rng.sample(others, 4)
    expected = expected_lines[crlf_stream]
    # A stretch of the file, as if a Windows host wrote to it for a while, mid-way through.
    start = int(expected * 0.4)
    return FilePlan(
        bom_streams=frozenset(picked[:2]),
        crlf_stream=crlf_stream,
        crlf_lines=range(start, start + max(3, int(expected * 0.05))),
        torn_streams=tuple(sorted(picked[2:])),
        empty_stream=EMPTY_STREAM,
        unknown_stream=UNKNOWN_STREAM,
    )


def torn(line: bytes, rng: random.Random) -> bytes:
    """A row cut mid-write: a strict prefix of a JSON object is never valid JSON."""
    return line[: max(1, int(len(line) * rng.uniform(0.3, 0.85)))]


# --- row kinds that change fields (before serialising) ------------------------------------------

_NUMERIC_FIELD = {"scrum_reviews": "accepted_on_attempt", "audits": "phase", "outcomes": "gap_signals",
                  "mode_experiments": "latency_ms", "model_trust": "trust_score"}

Transform = Callable[[random.Random, Any], Any]
_SEVERITIES = ("info", "low", "medium", "high", "critical")
_DISTILLED_AS_LIST: tuple[tuple[str, Transform], ...] = (("text", lambda rng, v: v.split("\n")),)
_WRONG_TYPES: dict[str, tuple[tuple[str, Transform], ...]] = {
    "scrum_reviews": (("accepted_on_attempt", lambda rng, v: rng.choice(("many", "second", "n/a"))),),
    "observer_reviews": (("verdict", lambda rng, v: v == "accept"),),
    "audits": (("severity", lambda rng, v: _SEVERITIES.index(v)), ("verdict", lambda rng, v: v == "pass")),
    "contract_analyses": (("failure_markers", lambda rng, v: "; ".join(v) or "none"),),
    "audit_discrepancies": (("claim", lambda rng, v: {"claim": v}),),
    "auto_apply": (("status", lambda rng, v: int(v == "committed")),),
    "outcomes": (("events", lambda rng, v: ", ".join(f"{e['name']} {'ok' if e['ok'] else 'failed'}" for e in v)),),
    "mode_experiments": (("validation_results", lambda rng, v: [v["grounded_fraction"]]),),
    "audit_facts": (("fact", lambda rng, v: {"text": v}),),
    "distilled_facts": _DISTILLED_AS_LIST,
    "distilled_procedures": _DISTILLED_AS_LIST,
    "distilled_config_hints": _DISTILLED_AS_LIST,
    "observer_escalations": (("reason", lambda rng, v: [v]),),
    "model_trust": (("trust_score", lambda rng, v: rng.choice(("high", "low", "unknown"))),),
}


def number_as_string(stream: str, row: Row, rng: random.Random) -> bool:
    field = _NUMERIC_FIELD.get(stream)
    value = row.get(field) if field else None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    row[field] = str(value)  # type: ignore[index]
    return True


def epoch_as_string(stream: str, row: Row, rng: random.Random) -> bool:
    field = TIME_FIELD.get(stream)
    if field is None or not isinstance(row.get(field), int):
        return False  # only rows whose writer logged epoch numbers
    row[field] = str(row[field])
    return True


def missing_required(stream: str, row: Row, rng: random.Random) -> bool:
    if stream == "model_trust":  # has no task_id, and falls back to window_end for time
        return row.pop("model", None) is not None
    field = rng.choice(("task_id", TIME_FIELD[stream]))
    return row.pop(field, None) is not None


def wrong_type(stream: str, row: Row, rng: random.Random) -> bool:
    for field, transform in _WRONG_TYPES.get(stream, ()):
        if row.get(field) is not None:
            row[field] = transform(rng, row[field])
            return True
    return False


def mark_non_utf8(stream: str, row: Row, rng: random.Random, text_field: str | None) -> bool:
    value = row.get(text_field) if text_field else None
    if not isinstance(value, str) or not value:
        return False
    cut = rng.randrange(len(value))
    row[text_field] = value[:cut] + NON_UTF8_MARK + value[cut:]  # type: ignore[index]
    return True


FIELD_MESS: dict[str, Callable[[str, Row, random.Random], bool]] = {
    "number_as_string": number_as_string,
    "epoch_as_string": epoch_as_string,
    "missing_required": missing_required,
    "wrong_type": wrong_type,
}


def fits(kind: str, stream: str) -> bool:
    return stream not in LINE_ONLY_STREAMS or kind in LINE_KINDS


# --- row kinds that change bytes (after serialising) --------------------------------------------


def replace_non_utf8_mark(line: bytes, rng: random.Random) -> bytes:
    return line.replace(_NON_UTF8_MARK_BYTES, rng.choice(_NON_UTF8_BYTES))


def malformed(line: bytes, rng: random.Random) -> bytes:
    """JSON that does not parse, in the shapes logs actually show."""
    variant = rng.randrange(4)
    if variant == 0:  # two appends interleaved: one row runs into the start of the next
        broken = line + line[: len(line) // 2]
    elif variant == 1:  # a row cut short and then the writer moved on
        broken = torn(line, rng)
    elif variant == 2:  # a hand-edited row with a trailing comma
        broken = line[:-1] + b",}"
    else:  # a Python dict printed with repr() instead of json.dumps
        broken = line.replace(b'"', b"'")
    try:
        orjson.loads(broken)
    except orjson.JSONDecodeError:
        return broken
    return line + b"}"  # belt and braces: never hand back a line that still parses
