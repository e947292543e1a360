"""Event times for the sample: ~60 days ending at a fixed date, written the ways real loggers do.

The end date is a constant, never the wall clock, so the same seed gives the same bytes on any
day. Different writers on the platform log time differently: most ISO-8601 with ``Z``, some
with a local offset, some epoch seconds or milliseconds. All of these are valid per the spec.
"""

import random
from datetime import UTC, datetime, timedelta, timezone

END = datetime(2026, 11, 1, tzinfo=UTC)
SPAN_SECONDS = 60 * 24 * 3600
START_EPOCH = END.timestamp() - SPAN_SECONDS
LAST_EPOCH = END.timestamp() - 1  # every event happens before END

# Offsets of the teams whose hosts log local time (Berlin summer, India, US West, US East, Tokyo).
_OFFSETS = tuple(timezone(timedelta(hours=h, minutes=m)) for h, m in ((2, 0), (5, 30), (-7, 0), (-4, 0), (9, 0)))

# (style, cumulative probability)
_STYLES = (("iso_ms_z", 0.52), ("iso_s_z", 0.72), ("iso_offset", 0.80), ("epoch_s", 0.90), ("epoch_ms", 1.0))


def moment(progress: float, rng: random.Random) -> float:
    """Epoch seconds for a row ``progress`` (0..1) of the way through the window, with jitter."""
    jitter = rng.random() * 90.0  # writers flush a little out of order; seconds, not days
    return min(START_EPOCH + progress * SPAN_SECONDS + jitter, LAST_EPOCH)


def stamp(epoch: float, rng: random.Random) -> str | int:
    """One event time in a randomly chosen house style."""
    draw = rng.random()
    style = next(style for style, cumulative in _STYLES if draw < cumulative)
    if style == "epoch_s":
        return int(epoch)
    if style == "epoch_ms":
        return int(epoch * 1000)
    if style == "iso_offset":
        return datetime.fromtimestamp(epoch, rng.choice(_OFFSETS)).isoformat(timespec="seconds")
    return _iso_utc(epoch, "milliseconds" if style == "iso_ms_z" else "seconds")


def iso_z(epoch: float) -> str:
    return _iso_utc(epoch, "seconds")


def _iso_utc(epoch: float, timespec: str) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
