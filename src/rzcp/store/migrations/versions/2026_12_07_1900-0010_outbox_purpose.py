"""a pushed message's purpose of use, to decide its delivery again against the patient's consent of then

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("exchange_outbox") as batch:
        batch.add_column(sa.Column("purpose", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchange_outbox") as batch:
        batch.drop_column("purpose")
