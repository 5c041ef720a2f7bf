"""The value forms shared by the indexer and the parser: a mismatch here is a silently missed search."""

from datetime import datetime

import pytest

from rzcp.fhir.search.values import (
    DATE_MAX,
    DATE_MIN,
    decimal_range,
    normalize_string,
    parse_date_range,
    parse_reference,
    period_range,
)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2020", datetime(2020, 1, 1), datetime(2020, 12, 31, 23, 59, 59, 999999)),
        ("2020-02", datetime(2020, 2, 1), datetime(2020, 2, 29, 23, 59, 59, 999999)),
        ("2020-12", datetime(2020, 12, 1), datetime(2020, 12, 31, 23, 59, 59, 999999)),
        ("2020-03-04", datetime(2020, 3, 4), datetime(2020, 3, 4, 23, 59, 59, 999999)),
        ("2020-03-04T10:00Z", datetime(2020, 3, 4, 10, 0), datetime(2020, 3, 4, 10, 0, 59, 999999)),
        ("2020-03-04T10:00:05+02:00", datetime(2020, 3, 4, 8, 0, 5), datetime(2020, 3, 4, 8, 0, 5, 999999)),
        (
            "2020-11-18T16:19:31-08:00",
            datetime(2020, 11, 19, 0, 19, 31),
            datetime(2020, 11, 19, 0, 19, 31, 999999),
        ),
        (
            "2020-03-04T10:00:05.25Z",
            datetime(2020, 3, 4, 10, 0, 5, 250000),
            datetime(2020, 3, 4, 10, 0, 5, 259999),
        ),
        ("2020-03-04T10:00:05", datetime(2020, 3, 4, 10, 0, 5), datetime(2020, 3, 4, 10, 0, 5, 999999)),
    ],
)
def test_date_precision_becomes_a_utc_range(text: str, low: datetime, high: datetime) -> None:
    assert parse_date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text", ["", "20", "2020-13", "2020-02-30", "2020-03-04T25:00Z", "yesterday", "2020-3-4"]
)
def test_malformed_dates_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date_range(text)


def test_period_open_ends_use_the_sentinels() -> None:
    assert period_range({"start": "2020-01-01"}) == (datetime(2020, 1, 1), DATE_MAX)
    assert period_range({"end": "2020"}) == (DATE_MIN, datetime(2020, 12, 31, 23, 59, 59, 999999))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100", (100.0, 99.5, 100.5)),
        ("100.0", (100.0, 99.95, 100.05)),
        ("1e2", (100.0, 50.0, 150.0)),
        ("-0.5", (-0.5, -0.55, -0.45)),
        (7, (7.0, 6.5, 7.5)),
        (51.2, (51.2, 51.15, 51.25)),
    ],
)
def test_decimal_range_follows_implied_precision(value: object, expected: tuple[float, float, float]) -> None:
    assert decimal_range(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["abc", "", "1,5", "NaN", "Infinity", True])
def test_non_numbers_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        decimal_range(value)


def test_normalize_string_lowercases_strips_accents_and_collapses_space() -> None:
    assert normalize_string("  Zoë  van\tDIJK ") == "zoe van dijk"
    assert normalize_string("Ærø Straße") == "ærø strasse"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", ("Patient", "123", None)),
        ("Patient/123/_history/2", ("Patient", "123", None)),
        ("https://x.example/fhir/Patient/1", ("Patient", "1", "https://x.example/fhir/Patient/1")),
        ("urn:uuid:d831ec91-c7a3", (None, None, "urn:uuid:d831ec91-c7a3")),
        ("#contained", None),
    ],
)
def test_parse_reference(ref: str, expected: object) -> None:
    assert parse_reference(ref) == expected
