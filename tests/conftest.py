"""Shared fixtures: the suite runs against SQLite and PostgreSQL alike.

PostgreSQL comes from RZCP_TEST_POSTGRES_URL (.ci/run sets it to a fresh database) or, when unset, from the
local server at 127.0.0.1:5432 in a database created for this run and dropped after it. Where no
PostgreSQL answers, its half of the suite is skipped with the reason, except under CI, where that fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from rzcp.app import create_app
from rzcp.runtime import Runtime
from rzcp.settings import Settings
from rzcp.store.migrate import upgrade
from rzcp.store.tables import metadata

#: Real-world FHIR data (nl-core examples, Synthea patients, R4 examples), shipped in the repository.
SHARED_DATA = Path(__file__).resolve().parents[1] / "data"

PG_SERVER = os.environ.get("RZCP_TEST_POSTGRES_SERVER", "postgresql+asyncpg://postgres@127.0.0.1:5432")


def _pg_admin(statement: str) -> None:
    import asyncpg

    async def run() -> None:
        dsn = PG_SERVER.replace("postgresql+asyncpg", "postgresql") + "/postgres"
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'rzcp.db'}"
        return
    given = os.environ.get("RZCP_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    name = f"rzcp_test_{uuid.uuid4().hex[:10]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {PG_SERVER}: {type(exc).__name__}")
    yield f"{PG_SERVER}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "fhir_resource_types": ["*"],
        "auto_migrate": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(database_url: str) -> AsyncIterator[Any]:
    application = create_app(make_settings(database_url))
    runtime: Runtime = application.state.runtime
    await upgrade(runtime.db)
    yield application
    await runtime.db.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def empty_store(app: Any) -> None:
    """Remove every resource, for tests that count what a search returns across the whole store."""
    runtime: Runtime = app.state.runtime
    async with runtime.db.write() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(text(f"DELETE FROM {table.name}"))


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


FHIR = "application/fhir+json"
