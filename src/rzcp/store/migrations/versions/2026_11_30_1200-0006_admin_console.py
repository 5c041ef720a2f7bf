"""admin console: the charts' daily counts and their watermark, member failures, verification runs; an
index for the auditors' search by member and period

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "admin_daily_counts",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("member_ura", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "member_ura", "metric", name=op.f("pk_admin_daily_counts")),
    )
    op.create_table(
        "admin_rollup_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_admin_rollup_state")),
    )
    op.create_table(
        "admin_source_failures",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("member_ura", sa.String(length=32), nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", "member_ura", name=op.f("pk_admin_source_failures")),
    )
    op.create_index(
        op.f("ix_admin_source_failures_recorded"), "admin_source_failures", ["recorded"], unique=False
    )
    op.create_table(
        "admin_verify_runs",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("ran_at", sa.DateTime(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("first_bad", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("ran_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_verify_runs")),
    )
    # The search by member and period counts its matches from this index alone (bench_admin_audit.py).
    op.create_index(
        "ix_audit_events_member_ura_recorded", "audit_events", ["member_ura", "recorded"], unique=False
    )
    # The console opens one record by its AuditEvent id.
    op.create_index("ix_audit_events_event_id", "audit_events", ["event_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_events_event_id", table_name="audit_events")
    op.drop_index("ix_audit_events_member_ura_recorded", table_name="audit_events")
    op.drop_table("admin_verify_runs")
    op.drop_index(op.f("ix_admin_source_failures_recorded"), table_name="admin_source_failures")
    op.drop_table("admin_source_failures")
    op.drop_table("admin_rollup_state")
    op.drop_table("admin_daily_counts")
