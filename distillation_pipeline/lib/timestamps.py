"""Event times as logs write them: ISO-8601 (Z or offset), epoch seconds, epoch milliseconds.

All normalise to an aware UTC datetime. Numbers may arrive as strings. A value that is none
of these is an error the caller turns into a skip with the reason.
"""

from datetime import UTC, datetime
from math import isfinite

# Epoch values above this are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 100_000_000_000
_MIN_YEAR, _MAX_YEAR = 1990, 2100


class TimestampError(ValueError):
    pass


def parse_timestamp(value: object) -> datetime:
    if value is None or isinstance(value, bool):
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return _from_epoch(float(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise TimestampError("empty timestamp")
        try:
            return _from_epoch(float(text))
        except ValueError:
            pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise TimestampError(f"unparseable timestamp: {value[:64]!r}") from exc
        if parsed.tzinfo is None:
            # Naive ISO strings are taken as UTC: our writers log in UTC, and guessing a local
            # zone would make the partition depend on the machine that runs the pipeline.
            parsed = parsed.replace(tzinfo=UTC)
        return _check_range(parsed.astimezone(UTC))
    raise TimestampError(f"not a timestamp: {type(value).__name__}")


def _from_epoch(seconds: float) -> datetime:
    if not isfinite(seconds):  # nan, inf, -inf
        raise TimestampError("not a finite epoch")
    if abs(seconds) >= _MS_THRESHOLD:
        seconds /= 1000.0
    try:
        return _check_range(datetime.fromtimestamp(seconds, tz=UTC))
    except (OverflowError, OSError, ValueError) as exc:
        raise TimestampError(f"epoch out of range: {seconds}") from exc


def _check_range(moment: datetime) -> datetime:
    if not (_MIN_YEAR <= moment.year <= _MAX_YEAR):
        raise TimestampError(f"timestamp out of range: {moment.isoformat()}")
    return moment


def iso_utc(moment: datetime) -> str:
    """The one textual form we write: UTC, microseconds only when present, trailing Z."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def now_utc() -> datetime:
    return datetime.now(UTC)
