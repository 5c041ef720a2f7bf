"""The trail's searches and exports read a moment one way: the console, its API and the CLI (an
administrator's walkthrough got 0 records from the CLI and 161 from the API for the same day)."""

from __future__ import annotations

from datetime import datetime

import pytest

from rzcp.audit.moments import region_moment


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2026-12-08", datetime(2026, 12, 7, 23, 0)),  # the region's day, in winter (CET)
        ("2026-07-01", datetime(2026, 6, 30, 22, 0)),  # and in summer (CEST)
        ("2026-12-08T00:21:40", datetime(2026, 12, 7, 23, 21, 40)),  # the region's time, without offset
        ("2026-12-08T00:21:40Z", datetime(2026, 12, 8, 0, 21, 40)),
        ("2026-12-08T00:21:40+01:00", datetime(2026, 12, 7, 23, 21, 40)),
        ("2026-10-25T02:30:00+02:00", datetime(2026, 10, 25, 0, 30)),  # the hour that happens twice, settled
    ],
)
def test_a_moment_as_the_region_reads_it(given: str, utc: datetime) -> None:
    assert region_moment(given) == utc


def test_an_inclusive_end_is_the_start_of_the_next_day() -> None:
    assert region_moment("2026-12-07", end=True) == datetime(2026, 12, 7, 23, 0)
    assert region_moment("20261207", end=True) == datetime(2026, 12, 7, 23, 0)  # ISO's basic form too
    with pytest.raises(ValueError, match="years 1 to 9999"):
        region_moment("9999-12-31", end=True)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("2026-10-25T02:30:00", "happens twice"),  # the clock goes back: which 02:30?
        ("2026-03-29T02:30:00", "does not exist"),  # the clock goes forward over it
        ("7 december", "not an ISO date"),
        ("0001-01-01T00:00", "years 1 to 9999"),  # it overflowed into a 500 (a review)
    ],
)
def test_a_moment_that_cannot_be_read_one_way_is_refused(given: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        region_moment(given)
