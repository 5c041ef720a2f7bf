"""Fixtures of the audit tests: a scratch database per test, migrated to head, on SQLite and PostgreSQL
(the `database_url` fixture of tests/conftest.py chooses which), and a factory of AuditFacts. The
migrations run once per session, into a template each test's database is copied from."""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import text

from rzcp.audit import AuditFacts, ChainSigner, Decision, Practitioner, Returned
from rzcp.audit.writer import AuditWriter
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade

SIGNER = ChainSigner.derived("audit-tests")
UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
_counter = itertools.count(1)


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql").replace("postgresql+psycopg", "postgresql")


async def _pg_execute(server: str, statement: str) -> None:
    admin = await asyncpg.connect(_pg_dsn(server) + "/postgres")
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated_template(database_url: str, tmp_path_factory: Any) -> AsyncIterator[str]:
    """An empty database of the same kind as `database_url`, migrated to head once per session: each test's
    `audit_db` starts as a copy of it (the same schema, triggers and empty sequences as a migration run for
    that test would leave), instead of running every migration again per test."""
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('audit-template') / 'template.db'}"
        server = None
    else:
        server, _, _ = database_url.rpartition("/")
        name = f"rzcp_audit_tpl_{uuid.uuid4().hex[:12]}"
        await _pg_execute(server, f'CREATE DATABASE "{name}"')
        url = f"{server}/{name}"
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()  # no connection may stay open to a PostgreSQL template, nor to a file being copied
    yield url
    if server is not None:
        await _pg_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="session")
async def scratch_url(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Any, migrated_template: str
) -> AsyncIterator[str]:
    """A fresh database of the same kind as `database_url`: empty, or, for a test that also asks for
    `audit_db`, a copy of `migrated_template` (so both name the same, migrated, database)."""
    template = migrated_template if "audit_db" in request.fixturenames else None
    if database_url.startswith("sqlite"):
        path = tmp_path / "audit.db"
        if template is not None:
            source = Path(template.split("///", 1)[1])
            for suffix in ("", "-wal"):  # the WAL too, should one be left (the copy is then as consistent)
                if Path(f"{source}{suffix}").exists():
                    shutil.copyfile(f"{source}{suffix}", f"{path}{suffix}")
        yield f"sqlite+aiosqlite:///{path}"
        return
    server, _, _ = database_url.rpartition("/")
    name = f"rzcp_audit_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template.rpartition("/")[2]}"' if template is not None else ""
    await _pg_execute(server, f'CREATE DATABASE "{name}"{copy}')
    yield f"{server}/{name}"
    await _pg_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="session")
async def audit_db(scratch_url: str) -> AsyncIterator[Database]:
    db = Database(scratch_url)
    await upgrade(db)  # a copy of the migrated template: checks the revision, changes nothing
    yield db
    await db.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def writer(audit_db: Database) -> AsyncIterator[AuditWriter]:
    w = AuditWriter(audit_db, SIGNER, checkpoint_records=1000)
    yield w
    await w.aclose()


def make_facts(**overrides: Any) -> AuditFacts:
    """A permitted patient search by a GP, returning Observations from two members."""
    n = next(_counter)
    values: dict[str, Any] = {
        "interaction": "search-type",
        "status": 200,
        "correlation_id": f"corr-{n}",
        "kind": "system",
        "subject": "his-huisarts",
        "client_id": "his-huisarts",
        "member_ura": "00001111",
        "member_name": "Huisartsenpraktijk De Linde",
        "role": "member",
        "practitioner": Practitioner(UZI, "900012345", name="dr. A. de Vries", role="huisarts"),
        "address": "192.0.2.10",
        "token_id": f"jti-{n}",
        "patient": "Patient/p1",
        "resource_type": "Observation",
        "query": "patient=p1&category=laboratory",
        "returned": (Returned("Observation", 3, "00002222"), Returned("Observation", 1, "00003333")),
        "decisions": (
            Decision(True, "00002222", "lab", consents=(("c1", "2"),)),
            Decision(False, "00004444", "lab", rule="region-default-deny"),
        ),
        "purpose": "TREAT",
        "recorded": datetime(2026, 3, 4, 13, 5, 6, 789000, tzinfo=UTC),
    }
    values.update(overrides)
    return AuditFacts(**values)


async def tamper(db: Database, *statements: str, params: dict[str, Any] | None = None) -> None:
    """What an attacker with the database's owner rights does: switch the append-only triggers off first."""
    async with db.write() as conn:
        if db.is_sqlite:
            for name in (
                "audit_events_no_update",
                "audit_events_no_delete",
                "audit_checkpoints_no_update",
                "audit_checkpoints_no_delete",
                "audit_anchors_no_update",
                "audit_anchors_no_delete",
            ):
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        else:
            for table in ("audit_events", "audit_checkpoints", "audit_anchors"):
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            await conn.execute(text(statement), params or {})
        if not db.is_sqlite:
            for table in ("audit_events", "audit_checkpoints", "audit_anchors"):
                await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
