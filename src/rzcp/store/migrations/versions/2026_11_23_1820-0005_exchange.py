"""exchange: member endpoints, the patient locator and the message outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "exchange_endpoints",
        sa.Column("ura", sa.String(length=16), nullable=False),
        sa.Column("agb", sa.String(length=16), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("auth_kind", sa.String(length=32), nullable=False),
        sa.Column("auth_sealed", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ura"], ["auth_members.ura"], name=op.f("fk_exchange_endpoints_ura_auth_members")
        ),
        sa.PrimaryKeyConstraint("ura", name=op.f("pk_exchange_endpoints")),
    )
    op.create_table(
        "exchange_patients",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("bsn_hash", sa.String(length=64), nullable=False),
        sa.Column("bsn_sealed", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_exchange_patients")),
        sa.UniqueConstraint("bsn_hash", name=op.f("uq_exchange_patients_bsn_hash")),
    )
    op.create_table(
        "exchange_locations",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("member_ura", sa.String(length=16), nullable=False),
        sa.Column("local_id", sa.String(length=64), nullable=False),
        sa.Column("announced_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["exchange_patients.patient_id"],
            name=op.f("fk_exchange_locations_patient_id_exchange_patients"),
        ),
        sa.ForeignKeyConstraint(
            ["member_ura"], ["auth_members.ura"], name=op.f("fk_exchange_locations_member_ura_auth_members")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_exchange_locations")),
        sa.UniqueConstraint("member_ura", "local_id", name=op.f("uq_exchange_locations_member_ura_local_id")),
    )
    op.create_index(op.f("ix_exchange_locations_patient_id"), "exchange_locations", ["patient_id"])
    op.create_table(
        "exchange_outbox",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sender_ura", sa.String(length=16), nullable=False),
        sa.Column("sender_key", sa.String(length=128), nullable=False),
        sa.Column("receiver_ura", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_outbox")),
        sa.UniqueConstraint(
            "sender_ura", "sender_key", name=op.f("uq_exchange_outbox_sender_ura_sender_key")
        ),
    )
    op.create_index(
        op.f("ix_exchange_outbox_status_next_attempt_at"), "exchange_outbox", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_exchange_outbox_status_next_attempt_at"), table_name="exchange_outbox")
    op.drop_table("exchange_outbox")
    op.drop_index(op.f("ix_exchange_locations_patient_id"), table_name="exchange_locations")
    op.drop_table("exchange_locations")
    op.drop_table("exchange_patients")
    op.drop_table("exchange_endpoints")
