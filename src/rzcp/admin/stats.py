"""The charts: per day, pulls and pushes per member, denials, emergencies and failed calls to members,
from the daily counts (rzcp.admin.rollup) after counting what was written since the last look."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.admin.rollup import catch_up
from rzcp.admin.tables import daily_counts as c
from rzcp.auth.tables import members
from rzcp.errors import BadRequest
from rzcp.store.db import Database

DEFAULT_DAYS = 30
MAX_DAYS = 2 * 366
_METRICS = ("kind:pull", "kind:push", "denied", "emergency", "source-failed")
#: What `GET /audit/stats` takes: any other name is refused (rzcp.admin.params) rather than charting a
#: period the caller did not ask for.
PARAMS = frozenset({"since", "until"})


def period(since: str | None, until: str | None, *, today: date) -> list[date]:
    """The days from `since` to `until`, both inclusive (default: the 30 days up to today)."""
    try:
        last = date.fromisoformat(until) if until else today
        first = date.fromisoformat(since) if since else last - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise BadRequest("since and until are dates: YYYY-MM-DD") from None
    if first > last:
        raise BadRequest("since is after until")
    if (last - first).days >= MAX_DAYS:
        raise BadRequest(f"a chart covers at most {MAX_DAYS} days")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


async def exchange_stats(db: Database, days: list[date]) -> dict[str, Any]:
    await catch_up(db)
    async with db.read() as conn:
        return await read_stats(conn, days)


async def read_stats(conn: AsyncConnection, days: list[date]) -> dict[str, Any]:
    labels = [d.isoformat() for d in days]
    index = {label: i for i, label in enumerate(labels)}
    rows = await conn.execute(
        select(c.c.day, c.c.member_ura, c.c.metric, c.c.count).where(
            c.c.day >= labels[0], c.c.day <= labels[-1], c.c.metric.in_(_METRICS)
        )
    )
    per_member: dict[str, dict[str, list[int]]] = {"kind:pull": {}, "kind:push": {}, "source-failed": {}}
    totals: dict[str, list[int]] = {"denied": [0] * len(days), "emergency": [0] * len(days)}
    for row in rows:
        i = index[row.day]
        if row.metric in totals:
            totals[row.metric][i] += row.count
        elif row.member_ura:
            series = per_member[row.metric].setdefault(row.member_ura, [0] * len(days))
            series[i] += row.count
    named = {ura for series in per_member.values() for ura in series}
    names = {}
    if named:
        found = await conn.execute(select(members.c.ura, members.c.name).where(members.c.ura.in_(named)))
        names = {row.ura: row.name for row in found}
    return {
        "days": labels,
        "members": {ura: names.get(ura, ura) for ura in sorted(named)},
        "pulls": per_member["kind:pull"],
        "pushes": per_member["kind:push"],
        "denials": totals["denied"],
        "emergencies": totals["emergency"],
        "upstream_failures": per_member["source-failed"],
    }
