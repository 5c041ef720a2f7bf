"""a member's own capacity: how many pulls one gateway process has under way at it (NULL: the setting)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("exchange_endpoints") as batch:
        batch.add_column(sa.Column("max_pulls", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchange_endpoints") as batch:
        batch.drop_column("max_pulls")
