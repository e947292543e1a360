"""The collector's fast paths against frozen copies of the code they replaced.

Each ``_old_*`` function below is the code as it was before a speed-up, kept verbatim so that
hypothesis can hold the new code to the same result (value, or exception and message) on any
input, odd ones included: event times, epoch values and the id/text coercions.
"""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from distillation_pipeline.evidence.streams import RowError, _event_time, _ident, _text
from distillation_pipeline.lib.timestamps import _MAX_YEAR, _MIN_YEAR, TimestampError, parse_timestamp

# ---------------------------------------------------------------------------------------------
# Frozen copies of the replaced code
# ---------------------------------------------------------------------------------------------


def _old_event_time(value: str) -> datetime | None:
    if ":" not in value:
        return None
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


def _old_parse_timestamp(value: object) -> datetime:
    if value is None or isinstance(value, bool):
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return _old_from_epoch(float(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise TimestampError("empty timestamp")
        try:
            return _old_from_epoch(float(text))
        except ValueError:
            pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise TimestampError(f"unparseable timestamp: {value[:64]!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _old_check_range(parsed.astimezone(UTC))
    raise TimestampError(f"not a timestamp: {type(value).__name__}")


def _old_from_epoch(seconds: float) -> datetime:
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise TimestampError("not a finite epoch")
    if abs(seconds) >= 100_000_000_000:
        seconds /= 1000.0
    try:
        return _old_check_range(datetime.fromtimestamp(seconds, tz=UTC))
    except (OverflowError, OSError, ValueError) as exc:
        raise TimestampError(f"epoch out of range: {seconds}") from exc


def _old_check_range(moment: datetime) -> datetime:
    if not (_MIN_YEAR <= moment.year <= _MAX_YEAR):
        raise TimestampError(f"timestamp out of range: {moment.isoformat()}")
    return moment


def _old_ident(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError("schema_violation", f"{key} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    return text or None


def _old_text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise RowError("schema_violation", f"{key} must be text, got {type(value).__name__}")
    return str(value)


# ---------------------------------------------------------------------------------------------
# Comparing outcomes
# ---------------------------------------------------------------------------------------------


def _outcome(function: Any, *args: object) -> tuple:
    """What a call did, comparable exactly: a datetime with its tzinfo and fold (== on aware
    datetimes compares instants only), any other value, or the exception's type and text."""
    try:
        result = function(*args)
    except (TimestampError, RowError) as exc:
        return ("raised", type(exc), str(exc), getattr(exc, "reason", None), getattr(exc, "detail", None))
    if isinstance(result, datetime):
        return ("datetime", result, result.tzinfo, result.fold, repr(result))
    return ("value", type(result), result)


# ISO-ish text: real shapes (our writers, other zones, naive, basic format, week dates, odd
# fraction lengths, lower-case z, whitespace) and mutations of them, plus loose characters.
_SEPARATORS = st.sampled_from(["T", "t", " ", "_"])
_ZONES = st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+01:00", "-05:30", "+14:00", "-23:59", "+0000", "+01", "ZZ", "Z ", "+00:00Z"])
_FRACTIONS = st.sampled_from(["", ".", ".1", ".12", ".123", ".1234", ".12345", ".123456", ".1234567", ",5", ".000", ".000000"])
_PADDING = st.sampled_from(["", " ", "\t", "\n", "  ", "\u00a0"])


@st.composite
def _iso_like(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
    style = draw(st.sampled_from(["extended", "basic", "minutes", "week", "date"]))
    if style == "extended":
        body = moment.strftime("%Y-%m-%d") + draw(_SEPARATORS) + moment.strftime("%H:%M:%S") + draw(_FRACTIONS)
    elif style == "basic":
        body = moment.strftime("%Y%m%d") + draw(_SEPARATORS) + moment.strftime("%H%M%S") + draw(_FRACTIONS)
    elif style == "minutes":
        body = moment.strftime("%Y-%m-%d") + draw(_SEPARATORS) + moment.strftime("%H:%M")
    elif style == "week":
        year, week, day = moment.isocalendar()
        body = f"{year:04d}-W{week:02d}-{day}" + draw(_SEPARATORS) + moment.strftime("%H:%M")
    else:
        body = moment.strftime("%Y-%m-%d")
    text = draw(_PADDING) + body + draw(_ZONES) + draw(_PADDING)
    if draw(st.booleans()):  # a mutation: one character replaced
        position = draw(st.integers(0, len(text) - 1))
        text = text[:position] + draw(st.sampled_from("0129-:TtZz+., W")) + text[position + 1 :]
    return text


_TIMESTAMP_TEXT = st.one_of(_iso_like(), st.text(alphabet="0123456789-:TtZz+., W\t", max_size=40), st.text(max_size=30))


@settings(max_examples=3000, deadline=None)
@given(_TIMESTAMP_TEXT)
def test_event_time_matches_the_step_for_step_version(value: str) -> None:
    assert _outcome(_event_time, value) == _outcome(_old_event_time, value)


def test_event_time_on_the_shapes_the_logs_use() -> None:
    cases = [
        "2026-09-02T00:05:55.942Z",
        "2026-09-02T00:05:55Z",
        "2026-09-02T00:05:55z",
        " 2026-09-02T00:05:55Z ",
        "2026-09-02T00:05:55+02:00",
        "2026-09-02T00:05:55",
        "2026-09-02 00:05:55.123456",
        "0001-01-01T00:30:00+01:00",  # outside datetime's range in UTC: OverflowError, caught
        "9999-12-31T23:30:00-01:00",
        "1989-12-31T23:59:59Z",
        "2101-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "not:a time",
    ]
    for value in cases:
        assert _outcome(_event_time, value) == _outcome(_old_event_time, value), value


_EPOCHS = st.one_of(
    st.integers(-(10**20), 10**20),
    st.integers(600_000_000, 4_200_000_000),
    st.integers(600_000_000_000, 4_200_000_000_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=6e8, max_value=4.2e12),
)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_EPOCHS, _EPOCHS.map(str), _TIMESTAMP_TEXT, st.none(), st.booleans(), st.lists(st.integers(), max_size=1)))
def test_parse_timestamp_matches_the_version_before_the_finite_check(value: object) -> None:
    assert _outcome(parse_timestamp, value) == _outcome(_old_parse_timestamp, value)


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**25), 10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(alphabet=" \t\n\u00a0\u2003x", max_size=5),
)
_JSON_VALUES = st.one_of(_JSON_SCALARS, st.lists(_JSON_SCALARS, max_size=2), st.dictionaries(st.text(max_size=3), _JSON_SCALARS, max_size=2))


@settings(max_examples=2000, deadline=None)
@given(_JSON_VALUES, st.booleans())
def test_ident_and_text_match_the_versions_without_the_str_fast_path(value: object, present: bool) -> None:
    row = {"key": value} if present else {}
    assert _outcome(_ident, row, "key") == _outcome(_old_ident, row, "key")
    assert _outcome(_text, row, "key") == _outcome(_old_text, row, "key")


def test_outcome_tells_zones_apart() -> None:
    # The comparison above is only as strict as this: the same instant in two zones differs.
    utc = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert _outcome(lambda: utc) != _outcome(lambda: utc.astimezone(timezone(timedelta(hours=1))))
