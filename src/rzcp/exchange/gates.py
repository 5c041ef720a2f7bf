"""How many pulls this process has under way at one member at a time: the rest wait their turn.

Without a limit every pull calls its members at once, and a member that serves its requests side by side
(an async server, or threads sharing a few cores) finishes a crowd of them together, at the end: the
gateway then has nothing to do while the member works, and the member nothing while the gateway filters
the crowd's answers, audits and answers them. Under load the two took turns instead of working at once
(bench/README.md, "A few pulls at a time per member"). A few pulls at a time keep both busy, and they
spare a member's server the full force of the region's peak.

How many: the member's own capacity when an operator set one (`rzcp members add/update --max-pulls`: a
small practice's server may take 2, a hospital's 32), else RZCP_MEMBER_MAX_PULLS. One pull takes one turn
per member, however many types it asks it for (`$everything`'s calls go out together). The wait counts
against the member's timeout; a pull that gets no turn within it leaves the member out with a warning
(`no-turn` in the audit record, `rzcp_pull_no_turn_total` in /metrics), and the member is not held to
have failed. The turns are this process's own: they only pace its calls, no decision
about data rests on them; a member meets up to this many pulls from each process of the gateway.
"""

from __future__ import annotations

import asyncio
from collections import deque

from rzcp.observability import NO_TURN

#: Pulls under way at one member from one process (RZCP_MEMBER_MAX_PULLS).
DEFAULT_MAX_PULLS = 8


class MemberGates:
    """A gate per member URA, made at the member's first pull: how many of this process's pulls are under
    way there, against the member's own capacity (its endpoint row's `max_pulls`) or else this process's
    default. The capacity a pull read when it asked is the gate's from then on, so a changed capacity
    counts from the next pull, and the pulls under way are counted against it too: never more than the
    larger of an old and a new capacity at once (a review found swapping in a new semaphore per change let
    pulls that read the two capacities in turn hold 12 turns with capacities of 2 and 4)."""

    def __init__(self, max_pulls: int = DEFAULT_MAX_PULLS) -> None:
        if max_pulls < 1:
            raise ValueError("a member takes at least one pull at a time")
        self.max_pulls = max_pulls
        self._gates: dict[str, _Gate] = {}

    async def enter(self, ura: str, wait_s: float, capacity: int | None = None) -> _Gate | None:
        """The member's gate once this pull holds one of its turns (give it back with `leave()`); None when
        no turn came within `wait_s` seconds."""
        gate = self._gates.get(ura)
        if gate is None:
            gate = self._gates[ura] = _Gate()
        if await gate.enter(capacity or self.max_pulls, wait_s):
            return gate
        NO_TURN.labels(member=ura).inc()
        return None

    @staticmethod
    def leave(turn: _Gate) -> None:
        turn.leave()


class _Gate:
    """Turns handed out first come, first served, up to a limit that may change while pulls are under way."""

    def __init__(self) -> None:
        self.limit = 1
        self.under_way = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def enter(self, limit: int, wait_s: float) -> bool:
        self.limit = limit
        self._hand_out()  # a raised limit lets those waiting in first
        if self.under_way < self.limit and not self._waiting:
            self.under_way += 1  # a free turn is taken at once, without a timer
            return True
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            async with asyncio.timeout(wait_s):
                await turn
        except TimeoutError:
            self._give_up(turn)
            return False
        except asyncio.CancelledError:  # the pull itself was cancelled: no turn held, none lost
            self._give_up(turn)
            raise
        return True

    def _give_up(self, turn: asyncio.Future[None]) -> None:
        if turn.done() and not turn.cancelled():
            self.leave()  # the turn came just as the wait ended: it goes to the next
        else:
            turn.cancel()
            if turn in self._waiting:  # a hand-out in between may have passed it over already
                self._waiting.remove(turn)

    def leave(self) -> None:
        self.under_way -= 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._waiting and self.under_way < self.limit:
            turn = self._waiting.popleft()
            if not turn.done():
                self.under_way += 1
                turn.set_result(None)
