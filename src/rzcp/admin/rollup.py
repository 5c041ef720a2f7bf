"""The charts' daily counts, brought up to date from the audit trail when they are read.

Each audit record is counted once, in the transaction that moves the watermark past it: the counts and
the watermark change together, and the watermark's row is locked while they do (SQLite: the write
transaction holds the database's write lock; PostgreSQL: `SELECT ... FOR UPDATE`), so two processes that
catch up at once never count a record twice: the second waits, then starts after the first's watermark.
Seqs become visible in order (a writer appends after the head it has seen committed, rzcp.audit.writer),
so every record below the newest seq is there when the counter passes it.

Only records after the watermark are read: a chart costs its days times its members, not the trail's size.
The first catch-up over an existing trail reads it once, in chunks (one transaction each).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.admin.classify import classify
from rzcp.admin.tables import daily_counts, rollup_state, source_failures
from rzcp.audit.moments import LOCAL
from rzcp.audit.tables import audit_events as t
from rzcp.store.db import Database

STATE = "daily"
#: Records counted per transaction: small enough that the audit writer never waits long for the lock.
CHUNK = 5000
#: How long the failed calls to members are kept for the health view.
FAILURES_KEPT = timedelta(days=2)


def local_day(recorded: datetime) -> str:
    """The region's calendar day of a naive-UTC moment."""
    return recorded.replace(tzinfo=UTC).astimezone(LOCAL).date().isoformat()


async def _watermark(conn: AsyncConnection, *, lock: bool) -> int:
    query = select(rollup_state.c.seq).where(rollup_state.c.name == STATE)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    seq = await conn.scalar(query)
    if seq is None:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        await conn.execute(insert(rollup_state).values(name=STATE, seq=0).on_conflict_do_nothing())
        seq = await conn.scalar(query)
    return int(seq or 0)


async def behind(db: Database) -> bool:
    """Whether records were written since the last count (two primary-key reads, no lock)."""
    async with db.read() as conn:
        head = await conn.scalar(select(func.max(t.c.seq)))
        done = await conn.scalar(select(rollup_state.c.seq).where(rollup_state.c.name == STATE))
    return head is not None and (done is None or head > done)


async def catch_up(db: Database, *, chunk: int = CHUNK) -> int:
    """Count every record written since the watermark; returns how many were counted."""
    counted = 0
    while await behind(db):
        async with db.write() as conn:
            n = await _count_chunk(conn, chunk)
        counted += n
        if n < chunk:
            break
    return counted


async def _count_chunk(conn: AsyncConnection, chunk: int) -> int:
    done = await _watermark(conn, lock=True)
    rows = (
        await conn.execute(
            select(t.c.seq, t.c.recorded, t.c.member_ura, t.c.content)
            .where(t.c.seq > done)
            .order_by(t.c.seq)
            .limit(chunk)
        )
    ).all()
    if not rows:
        return 0
    counts: Counter[tuple[str, str, str]] = Counter()
    failures: list[dict[str, object]] = []
    for row in rows:
        seen = classify(orjson.loads(row.content), describe=False)
        day, member = local_day(row.recorded), row.member_ura or ""
        counts[(day, member, f"kind:{seen.kind}")] += 1
        if seen.denied:
            counts[(day, member, "denied")] += 1
        if seen.emergency:
            counts[(day, member, "emergency")] += 1
        for source in seen.called:
            counts[(day, source, "source-called")] += 1
        for source in seen.failed:
            counts[(day, source, "source-failed")] += 1
            failures.append({"seq": row.seq, "member_ura": source, "recorded": row.recorded})
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(daily_counts)
    statement = statement.on_conflict_do_update(
        index_elements=[daily_counts.c.day, daily_counts.c.member_ura, daily_counts.c.metric],
        set_={"count": daily_counts.c.count + statement.excluded.count},
    )
    await conn.execute(
        statement,
        [{"day": d, "member_ura": m, "metric": k, "count": n} for (d, m, k), n in sorted(counts.items())],
    )
    if failures:
        await conn.execute(insert(source_failures).on_conflict_do_nothing(), failures)
        newest = max(row.recorded for row in rows)
        await conn.execute(delete(source_failures).where(source_failures.c.recorded < newest - FAILURES_KEPT))
    await conn.execute(rollup_state.update().where(rollup_state.c.name == STATE).values(seq=rows[-1].seq))
    return len(rows)
