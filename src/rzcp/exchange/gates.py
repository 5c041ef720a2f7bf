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

from rzcp.observability import NO_TURN

#: Pulls under way at one member from one process (RZCP_MEMBER_MAX_PULLS).
DEFAULT_MAX_PULLS = 8


class MemberGates:
    """A semaphore per member URA, made at the member's first pull with the member's own capacity (its
    endpoint row's `max_pulls`) or else this process's default. When an operator changes the capacity,
    the next pull makes a new semaphore: the pulls under way finish on the old one, so for that while the
    member may see up to both limits together."""

    def __init__(self, max_pulls: int = DEFAULT_MAX_PULLS) -> None:
        if max_pulls < 1:
            raise ValueError("a member takes at least one pull at a time")
        self.max_pulls = max_pulls
        self._gates: dict[str, tuple[int, asyncio.Semaphore]] = {}

    async def enter(self, ura: str, wait_s: float, capacity: int | None = None) -> asyncio.Semaphore | None:
        """The member's turn, to be given back with `leave()`, once this pull may call it; None when no
        turn came within `wait_s` seconds."""
        limit = capacity or self.max_pulls
        held = self._gates.get(ura)
        if held is None or held[0] != limit:
            held = self._gates[ura] = (limit, asyncio.Semaphore(limit))
        gate = held[1]
        if not gate.locked():
            await gate.acquire()  # a free turn is taken at once, without a timer
            return gate
        try:
            async with asyncio.timeout(wait_s):
                await gate.acquire()
        except TimeoutError:
            NO_TURN.labels(member=ura).inc()
            return None
        return gate

    @staticmethod
    def leave(turn: asyncio.Semaphore) -> None:
        turn.release()
