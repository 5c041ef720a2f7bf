"""Value helpers shared by the indexer and the search parser.

Both sides must turn a FHIR value into the same comparable form, or a search misses what the index holds:
dates become closed naive-UTC ranges [low, high] by their precision, decimals become the interval their
significant digits imply, strings are normalised the same way for the default and :contains searches.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

#: Open ends of a Period. Both fit a SQLite text timestamp (four-digit years sort as text) and PostgreSQL.
DATE_MIN = datetime(1, 1, 1)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999)

_ONE_US = timedelta(microseconds=1)

_DATE_RE = re.compile(
    r"(?P<year>\d{4})"
    r"(?:-(?P<month>\d{2})"
    r"(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?"
    r")?)?)?"
)


def parse_date_range(text: str) -> tuple[datetime, datetime]:
    """A FHIR date, dateTime or instant as the closed naive-UTC range its precision covers.

    "2020" covers the whole year, "2020-03-04T10:00Z" the whole minute. A time without a zone (allowed in a
    search value, not in a resource) is taken as UTC. Raises ValueError on anything else.
    """
    try:
        return _date_range(text)
    except OverflowError:  # a zone shift or a width past year 1 or 9999
        raise ValueError("outside the range of dates this server can compare") from None


def _date_range(text: str) -> tuple[datetime, datetime]:
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError("not a FHIR date")
    g = m.groupdict()
    year = int(g["year"])
    if g["month"] is None:
        return datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59, 999999)
    month = int(g["month"])
    if g["day"] is None:
        low = datetime(year, month, 1)
        nxt = datetime(year + 1, 1, 1) if month == 12 else datetime(year, month + 1, 1)
        return low, nxt - _ONE_US
    day = int(g["day"])
    if g["hour"] is None:
        low = datetime(year, month, day)
        return low, low + timedelta(days=1) - _ONE_US
    hour, minute = int(g["hour"]), int(g["minute"])
    if g["second"] is None:
        low = datetime(year, month, day, hour, minute)
        width = timedelta(minutes=1)
    elif g["fraction"] is None:
        low = datetime(year, month, day, hour, minute, int(g["second"]))
        width = timedelta(seconds=1)
    else:
        frac = g["fraction"][:6]
        low = datetime(year, month, day, hour, minute, int(g["second"]), int(frac.ljust(6, "0")))
        width = timedelta(microseconds=10 ** (6 - len(frac)))
    tz = g["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        low = low - sign * offset
    return low, low + width - _ONE_US


def period_range(period: dict[str, Any]) -> tuple[datetime, datetime]:
    """A Period as a closed range; a missing start or end is open (DATE_MIN / DATE_MAX)."""
    start, end = period.get("start"), period.get("end")
    low = parse_date_range(start)[0] if isinstance(start, str) else DATE_MIN
    high = parse_date_range(end)[1] if isinstance(end, str) else DATE_MAX
    return low, high


def instant_to_naive_utc(value: datetime) -> datetime:
    """An aware datetime in naive UTC, the form the `resources` and `idx_date` columns hold."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def decimal_range(value: Any) -> tuple[float, float, float]:
    """A decimal as (value, low, high) by its implied precision: "100" is [99.5, 100.5), "1e2" [50, 150).

    Accepts the text of a search value or a JSON number (int, float or Decimal). Raises ValueError.
    """
    if isinstance(value, bool):
        raise ValueError("not a number")
    text = value if isinstance(value, str) else str(value)
    try:
        dec = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError("not a number") from exc
    if not dec.is_finite():
        raise ValueError("not a finite number")
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    half = Decimal(5).scaleb(exponent - 1)
    return float(dec), float(dec - half), float(dec + half)


def normalize_string(value: str) -> str:
    """Lower-case, accents removed, whitespace collapsed: "  Zoë  van\tDijk" -> "zoe van dijk"."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


_RELATIVE_REF_RE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?")
_ABSOLUTE_TAIL_RE = re.compile(
    r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def parse_reference(reference: str) -> tuple[str | None, str | None, str | None] | None:
    """A literal reference as (target_type, target_id, url); None for a contained "#x" reference.

    "Patient/1" -> ("Patient", "1", None); "https://x/fhir/Patient/1" keeps the url and also gives type
    and id; "urn:uuid:..." or any other form only the url. A version (/_history/n) is dropped from the id.
    """
    reference = reference.strip()
    if not reference or reference.startswith("#"):
        return None
    m = _RELATIVE_REF_RE.fullmatch(reference)
    if m:
        return m.group(1), m.group(2), None
    m = _ABSOLUTE_TAIL_RE.search(reference) if "://" in reference else None
    if m:
        return m.group(1), m.group(2), reference
    return None, None, reference
