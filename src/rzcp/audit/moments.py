"""Moments as people give them to the trail's searches and exports, read one way by the console, its API
and the CLI: a date is the region's day (Europe/Amsterdam), a date-time without an offset is the region's
time. An administrator's walkthrough got no records from `rzcp audit export --since 2026-12-08` (read as
UTC midnight) and 161 from the API for the same day, and a date-time without an offset was taken as UTC
while a date was the region's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    LOCAL = ZoneInfo("Europe/Amsterdam")
except ZoneInfoNotFoundError:  # pragma: no cover - a system without tzdata
    LOCAL = ZoneInfo("UTC")


def region_moment(value: str, *, end: bool = False) -> datetime:
    """The moment as naive UTC (the trail's columns). `end`: a date means the day after it (an inclusive
    `until`). ValueError, with what to write instead, for anything else and for a local time the clock
    change skips or passes twice (`2026-10-25T02:30`: give the offset)."""
    try:
        if "T" not in value and " " not in value:  # a date, `2026-12-08` or `20261208`
            day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(), LOCAL).astimezone(UTC).replace(tzinfo=None)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return _utc(parsed, value)
    except (ValueError, OverflowError) as exc:  # `0001-01-01T00:00` overflowed into a 500 (a review)
        if isinstance(exc, ValueError) and str(exc).startswith(repr(value)):
            raise
        raise ValueError(f"{value!r} is not an ISO date or date-time from the years 1 to 9999") from None


def _utc(parsed: datetime, value: str) -> datetime:
    if parsed.tzinfo is None:
        first, second = parsed.replace(tzinfo=LOCAL, fold=0), parsed.replace(tzinfo=LOCAL, fold=1)
        if first.astimezone(UTC).astimezone(LOCAL).replace(tzinfo=None) != parsed:
            raise ValueError(f"{value!r} does not exist in the region's time (the clock goes forward)")
        if first.utcoffset() != second.utcoffset():
            raise ValueError(
                f"{value!r} happens twice in the region's time (the clock goes back): add its offset"
            )
        parsed = first
    return parsed.astimezone(UTC).replace(tzinfo=None)
