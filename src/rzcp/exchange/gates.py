"""How many pulls this process has under way at one member at a time: the rest wait their turn.

Without a limit every pull calls its members at once, and a member that serves its requests side by side
(an async server, or threads sharing a few cores) finishes a crowd of them together, at the end: the
gateway then has nothing to do while the member works, and the member nothing while the gateway filters
the crowd's answers, audits and answers them. Under load the two took turns instead of working at once
(bench/README.md, "A few pulls at a time per member"). A few pulls at a time keep both busy, and they
spare a member's server the full force of the region's peak.

One pull takes one turn per member, however many types it asks it for (`$everything`'s calls go out
together). The wait counts against the member's timeout; a pull that gets no turn within it leaves the
member out with a warning (`no-turn` in the audit record, `rzcp_pull_no_turn_total` in /metrics), and the
member is not held to have failed. The turns are this process's own: they only pace its calls, no decision
about data rests on them; a member meets up to this many pulls from each process of the gateway.
"""

from __future__ import annotations

import asyncio

from rzcp.observability import NO_TURN

#: Pulls under way at one member from one process (RZCP_MEMBER_MAX_PULLS).
DEFAULT_MAX_PULLS = 8


class MemberGates:
    """A semaphore per member URA, made at the member's first pull."""

    def __init__(self, max_pulls: int = DEFAULT_MAX_PULLS) -> None:
        if max_pulls < 1:
            raise ValueError("a member takes at least one pull at a time")
        self.max_pulls = max_pulls
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def enter(self, ura: str, wait_s: float) -> bool:
        """True once this pull may call the member (leave() after); False when no turn came within
        `wait_s` seconds."""
        gate = self._gates.get(ura)
        if gate is None:
            gate = self._gates[ura] = asyncio.Semaphore(self.max_pulls)
        if not gate.locked():
            await gate.acquire()  # a free turn is taken at once, without a timer
            return True
        try:
            async with asyncio.timeout(wait_s):
                await gate.acquire()
        except TimeoutError:
            NO_TURN.labels(member=ura).inc()
            return False
        return True

    def leave(self, ura: str) -> None:
        self._gates[ura].release()
