"""consent changes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 18:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_changes",
        sa.Column("patient_ref", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("patient_ref", name=op.f("pk_consent_changes")),
    )
    op.create_table(
        "consent_subjects",
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("patient_ref", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_consent_subjects")),
    )
    with op.batch_alter_table("consent_subjects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_subjects_patient_ref"), ["patient_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consent_subjects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_subjects_patient_ref"))
    op.drop_table("consent_subjects")
    op.drop_table("consent_changes")
