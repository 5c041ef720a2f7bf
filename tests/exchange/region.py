"""A small region for the end-to-end exchange tests: the gateway (on the `database_url` fixture's database)
and simulated members, each a real HTTP server on a loopback port, registered, announced and consented
through the same code the gateway and `rzcp demo` use."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from rzcp.app import create_app
from rzcp.auth import registry
from rzcp.auth.bsn import is_valid_bsn
from rzcp.consent.cache import note_consent_change
from rzcp.consent.cases import consent_from_compact
from rzcp.consent.policy import load_policy
from rzcp.exchange.adapters import Member, MemberAuth
from rzcp.exchange.directory import Directory, MemberChange
from rzcp.exchange.locator import Locator
from rzcp.exchange.secrets import BsnProtector, member_secret_box
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.membersim.loader import load_member_data
from rzcp.membersim.server import create_member_app
from rzcp.settings import Settings
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade
from rzcp.store.resources import ResourceStore
from tests.conftest import PRACTITIONER, SHARED_DATA, SystemClient, new_key
from tests.exchange.servers import free_port, serve

SYNTHEA = SHARED_DATA / "synthea" / "uscore_bundle_patient_85.json"
GATEWAY = "http://gateway.test/fhir"
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
POLICY = load_policy()


def synthea_ids(res_type: str, prefix: str) -> set[str]:
    """The local ids a member with `prefix` gives the Synthea file's resources of one type."""
    bundle = orjson.loads(SYNTHEA.read_bytes())
    return {
        prefix + e["fullUrl"].removeprefix("urn:uuid:")
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == res_type
    }


def new_ura() -> str:
    return f"{uuid.uuid4().int % 10**8:08d}"


def new_bsn() -> str:
    """A BSN that passes the 11-check, other than any a test used before (the database is shared)."""
    while True:
        bsn = f"9{uuid.uuid4().int % 10**8:08d}"
        if is_valid_bsn(bsn):
            return bsn


class Counting:
    """ASGI wrapper counting the requests that reach a member (to prove a denied member is never asked)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@dataclass
class SimMember:
    ura: str
    name: str
    category: str
    base: str
    db_url: str
    counter: Counting
    #: local patient id -> BSN
    patients: dict[str, str] = field(default_factory=dict)

    async def stored(self, res_type: str) -> list[dict[str, Any]]:
        db = Database(self.db_url)
        try:
            async with db.read() as conn:
                from sqlalchemy import select

                from rzcp.store.tables import resources

                rows = await conn.execute(
                    select(resources.c.content).where(
                        resources.c.res_type == res_type, resources.c.deleted.is_(False)
                    )
                )
                return [orjson.loads(r.content) for r in rows]
        finally:
            await db.dispose()


def member_app(name: str, ura: str, db_url: str) -> Counting:
    return Counting(create_member_app(name=name, ura=ura, database_url=db_url))


async def load_member(
    tmp: Path, prefix: str, types: list[str], extra: list[dict[str, Any]] = ()
) -> tuple[str, dict[str, str]]:
    """A member database loaded with the Synthea patient's resources of `types` (and `extra`)."""
    db_url = f"sqlite+aiosqlite:///{tmp / f'{prefix}{uuid.uuid4().hex[:6]}.db'}"
    report = await load_member_data(db_url, [SYNTHEA], id_prefix=prefix, types=types)
    if extra:
        db = Database(db_url)
        try:
            async with db.write() as conn:
                store = ResourceStore(conn, SearchRegistry.default())
                for resource in extra:
                    await store.create(resource, res_id=resource["id"])
        finally:
            await db.dispose()
    return db_url, report.patients


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "auto_migrate": False,
        "public_base_url": GATEWAY,
        "outbox_poll_seconds": 0.1,
        "outbox_retry_seconds": 0.2,
        "outbox_retry_max_seconds": 1.0,
        "outbox_lease_seconds": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


class Region:
    """The gateway's registry, locator and consents, written directly to its database (as the CLI and the
    demo do), and its HTTP API."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.db = Database(settings.database_url)
        self.search = SearchRegistry.default()
        self.directory = Directory(member_secret_box(settings.secret_key), settings.member_timeout)
        self.locator = Locator(BsnProtector(settings.bsn_secret))

    async def add_member(
        self, name: str, category: str, base: str, *, ura: str | None = None, timeout: float | None = None
    ) -> Member:
        ura = ura or new_ura()
        async with self.db.write() as conn:
            return await self.directory.add_member(
                conn,
                self.search,
                ura=ura,
                name=name,
                category=category,
                endpoint=f"{base}/fhir",
                call_timeout=timeout,
                auth=MemberAuth(),
            )

    async def update_member(self, ura: str, change: MemberChange) -> Member:
        async with self.db.write() as conn:
            return await self.directory.update_member(conn, self.search, ura, change)

    async def members(self, uras: list[str]) -> dict[str, Member]:
        async with self.db.read() as conn:
            return await self.directory.members(conn, uras, active_only=False)

    async def add_client(self, ura: str, scope: str = "system/*.cruds", role: str = "member") -> SystemClient:
        key = new_key()
        client_id = f"ehr-{uuid.uuid4().hex[:10]}"
        async with self.db.write() as conn:
            await registry.add_client(
                conn,
                client_id=client_id,
                member_ura=ura,
                scope=scope,
                role=role,
                jwks={"keys": [key.as_dict(private=False)]},
            )
        return SystemClient(client_id, ura, key)

    async def announce(self, ura: str, patients: dict[str, str]) -> dict[str, str]:
        """Announce the member's patients; BSN -> regional patient id."""
        out = {}
        async with self.db.write() as conn:
            for local, bsn in patients.items():
                out[bsn] = await self.locator.announce(conn, self.search, ura, bsn, local)
        return out

    async def consent(self, patient_id: str, compact: dict[str, Any]) -> str:
        consent_id = f"c-{uuid.uuid4().hex[:12]}"
        resource = consent_from_compact(
            {"id": consent_id, **compact}, POLICY, patient=f"Patient/{patient_id}"
        )
        resource.pop("meta", None)
        async with self.db.write() as conn:
            await ResourceStore(conn, self.search).create(resource, res_id=consent_id)
            await note_consent_change(conn, f"Patient/{patient_id}", consent_id)
        return consent_id

    async def client_for(self, system: SystemClient, scope: str = "system/*.cruds") -> httpx.AsyncClient:
        http = httpx.AsyncClient(base_url=self.url, timeout=30)
        response = await http.post("/auth/token", data=system.form(scope))
        assert response.status_code == 200, response.text
        http.headers.update(
            {
                "Authorization": f"Bearer {response.json()['access_token']}",
                "X-Purpose-Of-Use": "TREAT",
                "X-Acting-Practitioner": PRACTITIONER,
            }
        )
        return http

    async def close(self) -> None:
        await self.db.dispose()


@contextmanager
def gateway(settings: Settings, port: int | None = None) -> Iterator[tuple[Any, str]]:
    """The gateway app served on loopback; (app, url)."""
    asyncio.run(_migrate(settings.database_url))
    app = create_app(settings)
    with serve(app, port) as url:
        yield app, url


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


@contextmanager
def members(*apps: Counting) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(serve(app)) for app in apps]


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def source_of(resource: dict[str, Any]) -> str:
    return next(
        s["code"]
        for s in resource["meta"]["security"]
        if s["system"] == "https://rzcp.nl/fhir/CodeSystem/source-organization"
    )


def message_bundle(receiver_ura: str, bsn: str, *, key: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": key or str(uuid.uuid4()),
        "type": "message",
        "timestamp": "2025-06-01T10:00:00Z",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {
                        "system": "http://rzcp.nl/fhir/CodeSystem/events",
                        "code": "discharge-letter",
                    },
                    "destination": [
                        {
                            "endpoint": "urn:ura:" + receiver_ura,
                            "receiver": {
                                "identifier": {
                                    "system": "http://fhir.nl/fhir/NamingSystem/ura",
                                    "value": receiver_ura,
                                }
                            },
                        }
                    ],
                    "source": {"endpoint": "urn:sender"},
                    "focus": [{"reference": "urn:uuid:33333333-3333-4333-8333-333333333333"}],
                },
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}],
                },
            },
            {
                "fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333",
                "resource": {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
                    "subject": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"},
                    "content": [{"attachment": {"contentType": "text/plain", "data": "T250c2xhZ2JyaWVm"}}],
                },
            },
        ],
    }


async def wait_for(predicate: Any, timeout: float = 15.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)


__all__ = ["SimMember", "free_port"]


def merged_ids(members: list[tuple[str, str, list[str]]], res_types: set[str]) -> set[str]:
    """The ids a pull returns from members (URA, id prefix, types loaded) holding the Synthea patient:
    asked in URA order, a record two members hold alike (same content but for ids) comes back once."""
    from rzcp.exchange.pull import _fingerprint, _rewrite
    from rzcp.membersim.loader import read_member_data

    seen: set[str | bytes] = set()
    out: set[str] = set()
    for _ura, prefix, types in sorted(members):
        data = read_member_data([SYNTHEA], id_prefix=prefix, types=types)
        local = next(iter(data.patients))
        for resource in data.resources:
            if resource["resourceType"] not in res_types:
                continue
            key = _fingerprint(_rewrite(resource, f"Patient/{local}", "regional"))
            if key not in seen:
                seen.add(key)
                out.add(resource["id"])
    return out
