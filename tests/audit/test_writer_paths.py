"""The writer's direct paths: inline on SQLite with the thread as fallback when the write lock is taken,
one statement per batch on PostgreSQL; and two real processes appending to one chain at once."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from rzcp.audit import AuditWriter, build_event, verify_chain
from rzcp.audit.tables import audit_checkpoints, audit_events
from rzcp.store.db import Database

from .conftest import SIGNER, make_facts

ROOT = Path(__file__).resolve().parents[2]


async def _count(db: Database, table: Table) -> int:
    async with db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_checkpoints_ride_in_the_batch(audit_db: Database) -> None:
    """A checkpoint every 10 records, written with its batch; the chain and every checkpoint verify."""
    writer = AuditWriter(audit_db, SIGNER, max_batch=4, checkpoint_records=10)
    try:
        for _ in range(5):
            await asyncio.gather(*(writer.append(build_event(make_facts())) for _ in range(9)))
    finally:
        await writer.aclose()
    assert await _count(audit_db, audit_events) == 45
    assert await _count(audit_db, audit_checkpoints) >= 4
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok, result.line()
    assert result.checkpoints >= 4


async def test_sqlite_waits_for_a_held_write_lock_without_blocking_the_loop(
    audit_db: Database, writer: AuditWriter
) -> None:
    """Another connection holds SQLite's write lock: the records wait for it (in a thread, not on the
    event loop, which keeps serving), none is lost or answered early, and all land once it is released."""
    if not audit_db.is_sqlite:
        pytest.skip("SQLite's database-wide write lock")
    await writer.append(build_event(make_facts()))  # the writer knows the head
    path = audit_db.url.split("///", 1)[1]
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        appends = asyncio.gather(*(writer.append(build_event(make_facts())) for _ in range(20)))
        ticks = 0
        for _ in range(20):  # 0.2 s with the lock held: the loop keeps running, no record is answered
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not appends.done()
        holder.execute("COMMIT")
        receipts = await asyncio.wait_for(appends, 10)
    finally:
        holder.close()
    assert sorted(r.seq for r in receipts) == list(range(2, 22))
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok, result.line()
    assert result.records == 21


_OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from rzcp.audit import AuditWriter, build_event
    from rzcp.store.db import Database
    from tests.audit.conftest import SIGNER, make_facts

    async def main():
        db = Database(sys.argv[1])
        writer = AuditWriter(db, SIGNER, checkpoint_records=25)
        print("ready", flush=True)
        for _ in range(15):
            sys.stdin.readline()  # each round starts with the test's own, so the two race in every round
            await asyncio.gather(*(writer.append(build_event(make_facts())) for _ in range(20)))
            print("done", flush=True)
        await writer.aclose()
        await db.dispose()
        print(writer.records)

    asyncio.run(main())
    """
)


async def test_two_processes_append_at_once(audit_db: Database, scratch_url: str) -> None:
    """Another OS process appends 300 records while this one appends 300: one chain of 600 that verifies."""
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OTHER_PROCESS,
        scratch_url,
        str(ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert other.stdin is not None and other.stdout is not None
    writer = AuditWriter(audit_db, SIGNER, checkpoint_records=25)
    try:
        assert await asyncio.wait_for(other.stdout.readline(), 60) == b"ready\n"
        receipts = []
        for _ in range(15):  # rounds in lockstep: in each, both processes append 20 at once
            other.stdin.write(b"go\n")
            await other.stdin.drain()
            receipts += await asyncio.gather(*(writer.append(build_event(make_facts())) for _ in range(20)))
            assert await asyncio.wait_for(other.stdout.readline(), 60) == b"done\n"
    finally:
        await writer.aclose()
    out, err = await asyncio.wait_for(other.communicate(), 120)
    assert other.returncode == 0, err.decode()[-2000:]
    assert int(out.decode().split()[-1]) == 300
    async with audit_db.read() as conn:
        seqs = (await conn.execute(select(audit_events.c.seq).order_by(audit_events.c.seq))).scalars().all()
    assert seqs == list(range(1, 601))
    mine = sorted(r.seq for r in receipts)
    assert len(set(mine)) == 300
    assert mine[-1] - mine[0] > 300  # the two processes' batches interleaved
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok, result.line()
    assert result.records == 600
