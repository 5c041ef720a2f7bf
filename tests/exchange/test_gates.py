"""A member's turns: a few pulls of one process under way at a member at a time, the rest waiting their
turn up to a deadline (rzcp.exchange.gates)."""

from __future__ import annotations

import asyncio

import pytest

from rzcp.exchange.gates import MemberGates


async def test_a_member_takes_its_turns_and_the_next_pull_waits_for_a_free_one() -> None:
    gates = MemberGates(2)
    first = await gates.enter("11111111", 1.0)
    assert first is not None
    assert await gates.enter("11111111", 1.0)
    assert await gates.enter("22222222", 1.0)  # another member has turns of its own
    third = asyncio.create_task(gates.enter("11111111", 5.0))
    await asyncio.sleep(0.05)
    assert not third.done()  # both turns taken
    gates.leave(first)
    assert await asyncio.wait_for(third, 1.0)


async def test_no_turn_within_the_wait_is_a_refusal_and_takes_nothing() -> None:
    gates = MemberGates(1)
    taken = await gates.enter("11111111", 1.0)
    assert taken is not None
    assert await gates.enter("11111111", 0.05) is None
    gates.leave(taken)
    assert await gates.enter("11111111", 0.05)  # the refused wait left no turn taken behind


async def test_a_members_own_capacity_overrides_the_default() -> None:
    gates = MemberGates(8)
    small = [await gates.enter("11111111", 1.0, capacity=2) for _ in range(2)]
    assert all(small)
    assert await gates.enter("11111111", 0.05, capacity=2) is None  # a small practice: two at a time
    big = [await gates.enter("22222222", 0.05, capacity=20) for _ in range(20)]
    assert all(big)  # a hospital's server takes more than the default's eight


async def test_a_changed_capacity_applies_to_the_next_pull_and_the_turns_under_way_end_on_the_old() -> None:
    gates = MemberGates(8)
    old = await gates.enter("11111111", 1.0, capacity=1)
    assert old is not None
    assert await gates.enter("11111111", 0.05, capacity=1) is None
    raised = await gates.enter("11111111", 0.05, capacity=2)  # the operator raised the member's capacity
    assert raised is not None
    gates.leave(old)  # the pull under way gives its turn back to the gate it took it from
    assert await gates.enter("11111111", 0.05, capacity=2)
    assert await gates.enter("11111111", 0.05, capacity=2) is None


async def test_pulls_that_read_an_old_and_a_new_capacity_in_turn_never_exceed_the_larger() -> None:
    """Found by review: with a new semaphore per change, capacities of 2 and 4 read in turn held 12."""
    gates = MemberGates(8)
    held = [await gates.enter("11111111", 0.01, capacity=2 if i % 2 else 4) for i in range(12)]
    assert sum(turn is not None for turn in held) == 4
    assert gates._gates["11111111"].under_way == 4


async def test_a_cancelled_wait_takes_no_turn_and_a_turn_given_as_the_wait_ends_goes_to_the_next() -> None:
    gates = MemberGates(1)
    first = await gates.enter("11111111", 1.0)
    assert first is not None
    waiting = asyncio.create_task(gates.enter("11111111", 5.0))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    following = asyncio.create_task(gates.enter("11111111", 5.0))
    await asyncio.sleep(0.01)
    gates.leave(first)
    assert await asyncio.wait_for(following, 1.0) is not None  # the cancelled wait left nothing behind
    assert first.under_way == 1


def test_a_member_takes_at_least_one_pull() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MemberGates(0)
