"""Shared fixtures: the suite runs against SQLite and PostgreSQL alike.

PostgreSQL comes from RZCP_TEST_POSTGRES_URL (.ci/run sets it to a fresh database) or, when unset, from the
local server at 127.0.0.1:5432 in a database created for this run and dropped after it. Where no
PostgreSQL answers, its half of the suite is skipped with the reason, except under CI, where that fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import text

from rzcp.app import create_app
from rzcp.auth import registry
from rzcp.auth.assertions import ASSERTION_TYPE
from rzcp.auth.bsn import holds_bsn
from rzcp.auth.tables import AUTH_TABLES
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


BASE = "http://gateway.test"
TOKEN_URL = f"{BASE}/auth/token"
PRACTITIONER = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900012345"


@dataclass
class SystemClient:
    """A member system registered with the region: its client id and its private signing key."""

    client_id: str
    member_ura: str
    key: Any
    alg: str = "RS384"

    def assertion(self, **overrides: Any) -> str:
        """A client assertion as SMART Backend Services asks; `overrides` replace or (None) drop claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        header: dict[str, Any] = {"alg": self.alg, "kid": self.key.kid, "typ": "JWT"}
        for name, value in overrides.pop("header", {}).items():
            header[name] = value
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(header, claims, self.key, algorithms=[header["alg"]])

    def form(self, scope: str = "system/*.read", **overrides: Any) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(**overrides),
        }


def new_key(alg: str = "RS384") -> Any:
    # The trail masks what could be a BSN, in a list of kids too (their digits joined across the commas):
    # a kid starts with a letter and holds none, or a rare random one would be masked.
    kid = "k" + uuid.uuid4().hex[:11]
    while holds_bsn(kid):
        kid = "k" + uuid.uuid4().hex[:11]
    if alg.startswith("ES"):
        return ECKey.generate_key("P-384", parameters={"kid": kid}, private=True)
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


async def register_system(
    app: Any, *, scope: str = "system/*.cruds", role: str = "member", alg: str = "RS384", **client: Any
) -> SystemClient:
    """A new member and a client of it, with a fresh key pair (unique ids: the database is shared)."""
    runtime: Runtime = app.state.runtime
    ura = f"{uuid.uuid4().int % 10**8:08d}"
    client_id = f"ehr-{uuid.uuid4().hex[:10]}"
    key = new_key(alg)
    async with runtime.db.write() as conn:
        await registry.add_member(
            conn, ura=ura, name=f"Member {ura}", category="Z3", endpoint=f"https://{ura}.example/fhir"
        )
        if "jwks_url" not in client:
            client["jwks"] = {"keys": [key.as_dict(private=False)]}
        await registry.add_client(conn, client_id=client_id, member_ura=ura, scope=scope, role=role, **client)
    return SystemClient(client_id, ura, key, alg)


async def fetch_token(http: httpx.AsyncClient, system: SystemClient, scope: str = "system/*.cruds") -> str:
    response = await http.post("/auth/token", data=system.form(scope))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def gateway_client(app: Any, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def admin_system(app: Any) -> SystemClient:
    """The region's own administrative system, allowed everything; what `client` calls the API as."""
    return await register_system(app, scope="system/*.cruds", role="admin")


#: The admin system's token per app, reused while it has over a minute to live (a token per test would
#: cost the suite minutes of key signing).
_ADMIN_TOKENS: dict[int, tuple[str, float]] = {}


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: Any, admin_system: SystemClient) -> AsyncIterator[httpx.AsyncClient]:
    """The API as an admin system with `system/*.*`, a TREAT purpose and an acting practitioner."""
    async with gateway_client(app) as http:
        cached = _ADMIN_TOKENS.get(id(app))
        lifetime = app.state.runtime.settings.access_token_seconds
        if cached is None or time.monotonic() - cached[1] > lifetime - 60:
            cached = (await fetch_token(http, admin_system), time.monotonic())
            _ADMIN_TOKENS[id(app)] = cached
        token = cached[0]
        http.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "X-Purpose-Of-Use": "TREAT",
                "X-Acting-Practitioner": PRACTITIONER,
            }
        )
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def anonymous(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with no credentials at all."""
    async with gateway_client(app) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def empty_store(app: Any) -> None:
    """Remove every resource, for tests that count what a search returns across the whole store.
    The auth registry (members, clients, keys) stays: the callers' tokens must keep working."""
    runtime: Runtime = app.state.runtime
    keep = {t.name for t in AUTH_TABLES}
    async with runtime.db.write() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name not in keep and not table.info.get("append_only"):
                await conn.execute(text(f"DELETE FROM {table.name}"))


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


FHIR = "application/fhir+json"
