"""The writer: one chain under concurrency (also across two "processes"), group commit, fail closed."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from rzcp.audit import AuditUnavailable, AuditWriter, build_event, verify_chain
from rzcp.audit.tables import audit_checkpoints, audit_events
from rzcp.store.db import Database

from .conftest import SIGNER, make_facts


async def _rows(db: Database) -> list:
    async with db.read() as conn:
        return (await conn.execute(select(audit_events).order_by(audit_events.c.seq))).all()


async def test_one_record(audit_db: Database, writer: AuditWriter) -> None:
    event = build_event(make_facts())
    receipt = await writer.append(event)
    assert receipt.seq == 1 and receipt.event_id == event["id"]
    rows = await _rows(audit_db)
    assert len(rows) == 1
    assert rows[0].prev_hash == "0" * 64 and rows[0].hash == receipt.hash
    assert rows[0].patient == "Patient/p1" and rows[0].member_ura == "00001111"
    assert rows[0].key_id == SIGNER.key_id and rows[0].signature  # the batch's last record is signed
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok, result.line()
    assert result.records == 1


async def test_parallel_appends_one_chain(audit_db: Database, writer: AuditWriter) -> None:
    events = [build_event(make_facts()) for _ in range(300)]
    receipts = await asyncio.gather(*(writer.append(e) for e in events))
    assert sorted(r.seq for r in receipts) == list(range(1, 301))
    assert writer.batches < 300  # group commit: batches, not a transaction per record
    rows = await _rows(audit_db)
    assert [r.seq for r in rows] == list(range(1, 301))
    assert sorted(r.event_id for r in rows) == sorted(e["id"] for e in events)
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok, result.line()


async def test_two_processes_share_one_chain(audit_db: Database, scratch_url: str) -> None:
    """Two writers on two Database objects (two engines, two pools: two processes) interleave batches."""
    other_db = Database(scratch_url)
    first = AuditWriter(audit_db, SIGNER, max_batch=7, checkpoint_records=50)
    second = AuditWriter(other_db, SIGNER, max_batch=5, checkpoint_records=50)
    try:
        events = [build_event(make_facts()) for _ in range(400)]

        async def wave(start: int) -> list:
            return await asyncio.gather(
                *((first if i % 2 else second).append(e) for i, e in enumerate(events[start : start + 100]))
            )

        receipts = []
        for start in range(0, 400, 100):
            receipts += await wave(start)
        assert sorted(r.seq for r in receipts) == list(range(1, 401))
        rows = await _rows(audit_db)
        assert [r.seq for r in rows] == list(range(1, 401))
        assert len({r.event_id for r in rows}) == 400
        assert first.records + second.records == 400 and first.records and second.records
        result = await verify_chain(audit_db, SIGNER)
        assert result.ok, result.line()
        async with audit_db.read() as conn:
            checkpoints = (await conn.execute(select(func.count()).select_from(audit_checkpoints))).scalar()
        assert checkpoints >= 4
    finally:
        await first.aclose()
        await second.aclose()
        await other_db.dispose()


async def test_fail_closed(scratch_url: str) -> None:
    """A database without the audit tables: every caller gets AuditUnavailable (a 503), none a receipt."""
    db = Database(scratch_url)  # not migrated
    writer = AuditWriter(db, SIGNER)
    try:
        results = await asyncio.gather(
            *(writer.append(build_event(make_facts())) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, AuditUnavailable) for r in results)
        assert results[0].status == 503
        assert "audit trail could not be written" in results[0].message
        with pytest.raises(AuditUnavailable):
            await writer.record(make_facts())
    finally:
        await writer.aclose()
        await db.dispose()


async def test_fail_closed_then_recovers(audit_db: Database, writer: AuditWriter) -> None:
    await writer.append(build_event(make_facts()))
    with pytest.raises(AuditUnavailable):  # a record that cannot be stored (no id): the request fails
        await writer.append({"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"})
    broken = build_event(make_facts())
    # a number in a text column: PostgreSQL refuses it in the transaction (a NUL did, until the index
    # columns began to replace it: a hostile query must not fail its batch)
    broken["action"] = 5
    if not audit_db.is_sqlite:
        with pytest.raises(AuditUnavailable):
            await writer.append(broken)
    receipt = await writer.append(build_event(make_facts()))
    assert receipt.seq == 2
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok, result.line()


async def test_closed_writer_refuses(audit_db: Database) -> None:
    writer = AuditWriter(audit_db, SIGNER)
    await writer.append(build_event(make_facts()))
    await writer.aclose()
    with pytest.raises(AuditUnavailable):
        await writer.append(build_event(make_facts()))
