"""the moment of a member's last suspension: tokens issued before it stay refused after reinstatement

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_members") as batch:
        batch.add_column(sa.Column("suspended_at", sa.DateTime(timezone=False), nullable=True))
    # a member suspended now was suspended when its status last changed
    op.execute("UPDATE auth_members SET suspended_at = changed_at WHERE status = 'suspended'")


def downgrade() -> None:
    with op.batch_alter_table("auth_members") as batch:
        batch.drop_column("suspended_at")
