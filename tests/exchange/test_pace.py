"""The order of a pull's calls: the member slowest lately first."""

from __future__ import annotations

import pytest

from rzcp.exchange import pace as pace_module
from rzcp.exchange.pace import MemberPace


def test_members_not_yet_heard_from_go_first_then_the_slowest() -> None:
    pace = MemberPace()
    pace.note("fast", 5.0)
    pace.note("slow", 400.0)
    pace.note("middle", 40.0)
    assert pace.slowest_first(["fast", "new", "slow", "middle"]) == [1, 2, 3, 0]


def test_equals_keep_the_order_they_were_given() -> None:
    pace = MemberPace()
    for ura in ("a", "b", "c"):
        pace.note(ura, 20.0)
    assert pace.slowest_first(["c", "a", "b"]) == [0, 1, 2]
    assert MemberPace().slowest_first(["x", "y"]) == [0, 1]


def test_the_average_follows_a_member_that_changed_pace() -> None:
    pace = MemberPace()
    pace.note("a", 300.0)
    pace.note("b", 100.0)
    assert pace.slowest_first(["b", "a"]) == [1, 0]
    for _ in range(3):  # one fast answer does not undo a slow history
        pace.note("a", 10.0)
    assert pace.slowest_first(["b", "a"]) == [1, 0]
    for _ in range(10):  # about ten do
        pace.note("a", 10.0)
    assert pace.slowest_first(["b", "a"]) == [0, 1]
    assert 10.0 < (pace.expected_ms("a") or 0) < 30.0


def test_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace_module, "MAX_MEMBERS", 3)
    pace = MemberPace()
    for i in range(3):
        pace.note(f"m{i}", float(i))
    pace.note("m3", 7.0)
    assert pace.expected_ms("m0") is None
    assert pace.expected_ms("m3") == 7.0
