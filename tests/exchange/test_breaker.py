"""The circuit breaker on its own, with a fake clock."""

from __future__ import annotations

from rzcp.exchange.breaker import BreakerBoard, BreakerState, CircuitBreaker
from tests.exchange.conftest import FakeClock


def test_opens_after_threshold_failures_in_a_row() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success in between starts the count again
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == 10


def test_half_open_lets_one_trial_through_and_closes_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_a_failed_trial_opens_it_for_another_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_board_keeps_one_breaker_per_member() -> None:
    board = BreakerBoard(failure_threshold=1, cool_down=5, clock=FakeClock())
    board.for_member("A").record_failure()
    assert board.for_member("A") is board.for_member("A")
    assert board.states() == {"A": BreakerState.OPEN}
    assert board.for_member("B").allow()


def test_a_member_at_a_new_address_starts_with_a_closed_breaker() -> None:
    board = BreakerBoard(failure_threshold=1, cool_down=5, clock=FakeClock())
    board.for_member("A", "http://old/fhir").record_failure()
    assert not board.for_member("A", "http://old/fhir").allow()
    assert not board.for_member("A").allow()  # asked without an address: the one in use
    assert board.for_member("A", "http://new/fhir").allow()
    assert board.states() == {"A": BreakerState.CLOSED}


def test_a_trial_that_never_reports_does_not_block_the_member_for_good() -> None:
    """A trial whose caller was cancelled (a pull cut off) never records its result: after a cool-down
    another trial goes out (a review found such a breaker refusing every call for a day)."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()  # the trial, never reported
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()  # a new trial
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
