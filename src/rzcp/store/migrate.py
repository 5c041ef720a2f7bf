"""Alembic, driven from the application: `rzcp db upgrade`, the embedded default's automatic upgrade at
start-up, and the readiness check's "are the migrations at head?".

On PostgreSQL an advisory lock makes the upgrade one process's job when several start together.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from rzcp.store.db import Database

_LOCK_KEY = 7513_0001


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "rzcp.store:migrations")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(db: Database, revision: str = "head") -> None:
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.run_sync(_upgrade, revision)


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def is_at_head(db: Database) -> bool:
    return await current_revision(db) == head_revision()
