"""The console's own tables (revision 0006): derived data and the record of verification runs.

admin_daily_counts   per local day, member and metric, how many audit records counted (the charts);
                     rebuilt from the trail at any time, so it is not append-only
admin_rollup_state   how far the trail is counted: the last seq, one row, locked while counting
admin_source_failures the failed calls to a member (seq, member) of the last days: member health
admin_verify_runs    each run of the trail's verification, by the console or by `rzcp audit verify`
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Float, Index, Integer, String, Table

from rzcp.store.tables import metadata

PK = BigInteger().with_variant(Integer(), "sqlite")

daily_counts = Table(
    "admin_daily_counts",
    metadata,
    #: The day in the region's time zone, `YYYY-MM-DD`.
    Column("day", String(10), primary_key=True),
    #: The member the metric is about ("" when none: the gateway's own records, unauthenticated calls).
    Column("member_ura", String(32), primary_key=True),
    #: `kind:pull`, `kind:push` ... (per requesting member), `denied`, `emergency`,
    #: `source-failed` and `source-called` (per member called by the exchange).
    Column("metric", String(40), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

rollup_state = Table(
    "admin_rollup_state",
    metadata,
    Column("name", String(32), primary_key=True),
    #: Every audit record with a seq up to this one is counted in admin_daily_counts.
    Column("seq", BigInteger, nullable=False),
)

source_failures = Table(
    "admin_source_failures",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("member_ura", String(32), primary_key=True),
    #: When the record was made, naive UTC.
    Column("recorded", DateTime(timezone=False), nullable=False),
    Index(None, "recorded"),
)

verify_runs = Table(
    "admin_verify_runs",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("ran_at", DateTime(timezone=False), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("first_bad", BigInteger, nullable=True),
    Column("message", String(1000), nullable=False),
    Column("seconds", Float, nullable=False),
    #: Who ran it: the console user's subject, or `cli`.
    Column("ran_by", String(200), nullable=False),
)

ADMIN_TABLES = (daily_counts, rollup_state, source_failures, verify_runs)
