"""audit trail: the append-only, hash-chained AuditEvent table, its checkpoints and archive anchors

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:15:00.000000

On PostgreSQL this also makes the trail append-only for everybody who cannot disable triggers:

- a trigger refuses UPDATE and DELETE on audit_events (DELETE is let through only for rows an archive anchor
  covers: `rzcp audit archive`), and UPDATE, DELETE and TRUNCATE on audit_checkpoints and audit_anchors;
- the application's role keeps only SELECT and INSERT on those tables.

A deployment separates two roles. The migration owner (say `rzcp_owner`) runs `rzcp db upgrade` and
`rzcp audit archive` and owns the tables: an owner could ALTER TABLE ... DISABLE TRIGGER, so the gateway never
runs as it. The application role (`rzcp_app`, or the name in RZCP_AUDIT_APP_ROLE when migrating) runs
`rzcp serve` with DML rights granted on the other tables. When that role exists at migration time, this
revision revokes UPDATE, DELETE and TRUNCATE on the audit tables from it and grants SELECT, INSERT; a role
created later needs the same lines by hand:

    GRANT SELECT, INSERT ON audit_events, audit_checkpoints, audit_anchors TO rzcp_app;
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_checkpoints, audit_anchors FROM rzcp_app;

On SQLite the same refusals are triggers too; they keep the gateway's own code honest, not a file's owner.
"""

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit_events", "audit_checkpoints", "audit_anchors")

PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION rzcp_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events' THEN
        IF OLD.seq <= COALESCE((SELECT max(seq) FROM audit_anchors), 0) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'rzcp: % is append-only; % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def app_role_statements(role: str) -> list[str]:
    """The grants of the application role on the audit tables."""
    tables = ", ".join(APPEND_ONLY)
    return [
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {tables} FROM {role}",
        f"GRANT SELECT, INSERT ON {tables} TO {role}",
    ]


def _postgresql() -> None:
    # lz4 (PostgreSQL 14+, when built with it) compresses the ~4 kB records about as well as pglz and reads
    # them back several times faster: the verifier reads every one of them.
    lz4 = op.get_bind().execute(
        sa.text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
    )
    if lz4.scalar():
        op.execute("ALTER TABLE audit_events ALTER COLUMN content SET COMPRESSION lz4")
    op.execute(PG_FUNCTIONS)
    for table in APPEND_ONLY:
        events = "UPDATE OR DELETE"
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE {events} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION rzcp_audit_refuse()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION rzcp_audit_refuse()"
        )
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {', '.join(APPEND_ONLY)} FROM PUBLIC")
    role = os.environ.get("RZCP_AUDIT_APP_ROLE", "rzcp_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError("RZCP_AUDIT_APP_ROLE must be a plain lower-case role name")
    exists = op.get_bind().execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if exists:
        for statement in app_role_statements(role):
            op.execute(statement)


def _sqlite() -> None:
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'rzcp: {table} is append-only; UPDATE refused'); END"
        )
    op.execute(
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "WHEN OLD.seq > COALESCE((SELECT max(seq) FROM audit_anchors), 0) "
        "BEGIN SELECT RAISE(ABORT, 'rzcp: audit_events is append-only; DELETE refused'); END"
    )
    for table in ("audit_checkpoints", "audit_anchors"):
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'rzcp: {table} is append-only; DELETE refused'); END"
        )


def upgrade() -> None:
    op.create_table(
        "audit_anchors",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=False),
        sa.Column("archive_name", sa.String(length=1024), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_anchors")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type_code", sa.String(length=64), nullable=False),
        sa.Column("subtype", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=1), nullable=True),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=True),
        sa.Column("agent", sa.String(length=300), nullable=True),
        sa.Column("member_ura", sa.String(length=32), nullable=True),
        sa.Column("client_id", sa.String(length=128), nullable=True),
        sa.Column("purpose", sa.String(length=32), nullable=True),
        sa.Column("emergency", sa.Boolean(), nullable=False),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("signature", sa.String(length=128), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_agent_seq"), ["agent", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_client_id_seq"), ["client_id", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_emergency_seq"), ["emergency", "seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_events_member_ura_seq"), ["member_ura", "seq"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_events_outcome_seq"), ["outcome", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_patient_seq"), ["patient", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_purpose_seq"), ["purpose", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_recorded"), ["recorded"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_events_type_code_subtype_seq"), ["type_code", "subtype", "seq"], unique=False
        )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql()
    else:
        _sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS rzcp_audit_refuse()")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_type_code_subtype_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_recorded"))
        batch_op.drop_index(batch_op.f("ix_audit_events_purpose_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_patient_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_outcome_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_member_ura_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_emergency_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_correlation_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_client_id_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_events_agent_seq"))

    op.drop_table("audit_events")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_anchors")
