"""Alembic's environment: runs on the connection the application hands it (rzcp.store.migrate), so
migrations use the same driver and settings as the gateway itself."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

import rzcp.audit.tables
import rzcp.auth.tables  # noqa: F401 - registers the auth tables on the shared metadata
from rzcp.consent import tables as _consent_tables  # noqa: F401 - registers the consent tables
from rzcp.exchange import tables as _exchange_tables  # noqa: F401 - registers the exchange tables
from rzcp.settings import Settings
from rzcp.store.db import Database
from rzcp.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    """For `alembic` run by hand (revision --autogenerate): the database from RZCP_DATABASE_URL."""
    db = Database(Settings().database_url)
    async with db.write() as conn:
        await conn.run_sync(_run)
    await db.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
