"""A member's turns: a few pulls of one process under way at a member at a time, the rest waiting their
turn up to a deadline (rzcp.exchange.gates)."""

from __future__ import annotations

import asyncio

import pytest

from rzcp.exchange.gates import MemberGates


async def test_a_member_takes_its_turns_and_the_next_pull_waits_for_a_free_one() -> None:
    gates = MemberGates(2)
    assert await gates.enter("11111111", 1.0)
    assert await gates.enter("11111111", 1.0)
    assert await gates.enter("22222222", 1.0)  # another member has turns of its own
    third = asyncio.create_task(gates.enter("11111111", 5.0))
    await asyncio.sleep(0.05)
    assert not third.done()  # both turns taken
    gates.leave("11111111")
    assert await asyncio.wait_for(third, 1.0)


async def test_no_turn_within_the_wait_is_a_refusal_and_takes_nothing() -> None:
    gates = MemberGates(1)
    assert await gates.enter("11111111", 1.0)
    assert not await gates.enter("11111111", 0.05)
    gates.leave("11111111")
    assert await gates.enter("11111111", 0.05)  # the refused wait left no turn taken behind


def test_a_member_takes_at_least_one_pull() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MemberGates(0)
