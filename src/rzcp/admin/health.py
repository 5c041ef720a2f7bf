"""Is the exchange healthy: per member, the failed calls of the last 24 hours (from the audit trail, via
the daily counting in rzcp.admin.rollup, so every process's calls count); the outbox's backlog; the last
verification of the trail.

A member is `failing` when a call to it failed in the last hour, `ok` when the exchange called it in the
last two days otherwise, and `unknown` when nobody asked it anything lately."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.admin.rollup import local_day
from rzcp.admin.tables import daily_counts, source_failures
from rzcp.exchange.tables import outbox

FAILING_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class MemberHealth:
    state: str
    failures_24h: int = 0
    last_failure: datetime | None = None

    def json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "failures_24h": self.failures_24h,
            "last_failure": self.last_failure.isoformat() + "Z" if self.last_failure else None,
        }


UNKNOWN = MemberHealth("unknown")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def member_health(conn: AsyncConnection, *, now: datetime | None = None) -> dict[str, MemberHealth]:
    """Health by URA for every member the exchange called or failed to call lately (others: UNKNOWN)."""
    now = now or _now()
    failures = await conn.execute(
        select(
            source_failures.c.member_ura,
            func.count().label("n"),
            func.max(source_failures.c.recorded).label("last"),
        )
        .where(source_failures.c.recorded >= now - timedelta(hours=24))
        .group_by(source_failures.c.member_ura)
    )
    found = {row.member_ura: (int(row.n), row.last) for row in failures}
    recent_days = [local_day(now - timedelta(days=1)), local_day(now)]
    called = set(
        await conn.scalars(
            select(daily_counts.c.member_ura).where(
                daily_counts.c.metric == "source-called", daily_counts.c.day.in_(recent_days)
            )
        )
    )
    health = {ura: MemberHealth("ok") for ura in called}
    for ura, (n, last) in found.items():
        state = "failing" if last >= now - FAILING_WINDOW else "ok"
        health[ura] = MemberHealth(state, n, last)
    return health


async def outbox_backlog(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        select(outbox.c.status, func.count().label("n"))
        .where(outbox.c.status.in_(("pending", "failed")))
        .group_by(outbox.c.status)
    )
    counts = {row.status: int(row.n) for row in rows}
    return {"pending": counts.get("pending", 0), "failed": counts.get("failed", 0)}
