"""ended sessions: the token ids of patient and staff logins ended by logout (RFC 7009 revocation)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_ended_sessions",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_auth_ended_sessions")),
    )
    op.create_index(
        op.f("ix_auth_ended_sessions_expires_at"), "auth_ended_sessions", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_ended_sessions_expires_at"), table_name="auth_ended_sessions")
    op.drop_table("auth_ended_sessions")
