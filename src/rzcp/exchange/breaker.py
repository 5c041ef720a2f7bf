"""A circuit breaker per member: stop calling a member that keeps failing, try again after a cool-down.

The state lives in this process only. It is a local health heuristic that saves time and sockets (no call
to a member that timed out five times in a row), and it decides nothing about access: which members may be
asked is consent's decision, taken from the database, the same in every process. Two gateway processes may
hold different breaker states for one member; the worst that does is one process asking a member the
other has given up on for a while, or skipping one that just came back (reported as an incomplete source).

States: closed (calls go through; `failure_threshold` failures in a row open it), open (calls are refused
until `cool_down` seconds have passed), half-open (one trial call goes through; its success closes the
breaker, its failure opens it again for another cool-down).

Why not a library: the candidates on PyPI (pybreaker, circuitbreaker, aiobreaker, purgatory) count
exceptions raised by a wrapped call, while an adapter never raises for a member's misbehaviour: it reports
it, and which reports are failures (a timeout, a 5xx, garbage) and which are not (a 404, one dropped entry)
is the adapter's call. This class is the 60 lines that needs, with an injectable clock for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    cool_down: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _failures: int = 0
    _opened_at: float | None = None
    _trial_running: bool = False
    _trial_started: float = 0.0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.cool_down:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one trial at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        # A trial that never reported (its caller was cancelled) does not block the member for good: after
        # a cool-down another may go (a review found a breaker half-open with no trial, for a day).
        stale = self._trial_running and self.clock() - self._trial_started >= self.cool_down
        if state is BreakerState.HALF_OPEN and (not self._trial_running or stale):
            self._trial_running = True
            self._trial_started = self.clock()
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._trial_running = False
        if self._opened_at is not None:  # a failed trial (or a late failure): a new cool-down
            self._opened_at = self.clock()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = self.clock()

    def retry_in(self) -> float:
        """Seconds until the next trial is allowed (0 when calls may go out)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cool_down - (self.clock() - self._opened_at))


@dataclass
class BreakerBoard:
    """One breaker per member (by URA), made on first use with the same settings, and made anew when the
    member's address changes: a member moved to a working server is called there at once, not after the
    old address's cool-down (an integrator's walkthrough waited 30 s for it)."""

    failure_threshold: int = 5
    cool_down: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _breakers: dict[str, tuple[str | None, CircuitBreaker]] = field(default_factory=dict)

    def for_member(self, ura: str, address: str | None = None) -> CircuitBreaker:
        """The member's breaker for calls to `address` (None: whatever address it was last used for)."""
        found = self._breakers.get(ura)
        if found is not None and (address is None or found[0] in (None, address)):
            if found[0] is None and address is not None:
                self._breakers[ura] = (address, found[1])
            return found[1]
        breaker = CircuitBreaker(self.failure_threshold, self.cool_down, self.clock)
        self._breakers[ura] = (address, breaker)
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {ura: breaker.state for ura, (_, breaker) in self._breakers.items()}
