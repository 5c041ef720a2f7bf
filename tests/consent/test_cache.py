"""Invalidation across processes: two Database objects stand for two gateway processes on one database.
A consent written through one is decided on by the other's very next request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest_asyncio

from rzcp.consent.cache import ConsentCache, note_consent_change
from rzcp.consent.cases import consent_from_compact
from rzcp.consent.history import consents_at, in_force_at
from rzcp.consent.model import Request
from rzcp.consent.policy import Policy
from rzcp.consent.repository import change_version, consent_versions
from rzcp.consent.service import check_and_prepare_consent, evaluate
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade
from rzcp.store.resources import ResourceStore, utcnow

REGISTRY = SearchRegistry.default()
HOSPITAL, GP = "00000201", "00000101"
MEMBERS = {HOSPITAL, GP}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def two_processes(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    first, second = Database(database_url), Database(database_url)
    await upgrade(first)
    yield first, second
    await first.dispose()
    await second.dispose()


def _request(**changes: object) -> Request:
    base = Request(
        requester_ura=HOSPITAL,
        requester_category="ziekenhuizen-labs",
        source_ura=GP,
        source_category="huisartsen",
        purpose="TREAT",
        moment=utcnow(),
        resource_type="MedicationRequest",
        codes=frozenset(),
        labels=frozenset(),
    )
    return base.about(**changes)


async def _write(db: Database, policy: Policy, patient: str, compact: dict, *, update: bool = False) -> str:
    body = consent_from_compact(compact, policy, patient="Patient/someone-else")
    resource = check_and_prepare_consent(body, patient_ref=patient, policy=policy, known_members=MEMBERS)
    async with db.write() as conn:
        store = ResourceStore(conn, REGISTRY)
        if update:
            version, _ = await store.update(resource)
        else:
            resource.pop("meta", None)
            version = await store.create(resource, res_id=resource["id"])
        await note_consent_change(conn, patient, version.res_id)
    return version.res_id


async def _decide(db: Database, cache: ConsentCache, policy: Policy, patient: str) -> str:
    async with db.read() as conn:
        (decision,) = await evaluate(conn, cache, policy, patient, [_request()])
        return decision.effect


async def test_a_change_through_one_process_is_seen_by_the_others_next_decision(
    two_processes: tuple[Database, Database], policy: Policy, database_url: str
) -> None:
    first, second = two_processes
    patient = f"Patient/p-{abs(hash(database_url)) % 10**8}-cache"
    cache_one, cache_two = ConsentCache(), ConsentCache()

    assert await _decide(second, cache_two, policy, patient) == "deny"
    consent_id = await _write(
        first,
        policy,
        patient,
        {"id": f"c-{patient[-20:]}".replace("/", "-"), "permit": {"to": "ziekenhuizen-labs"}},
    )
    assert await _decide(second, cache_two, policy, patient) == "permit"
    assert await _decide(first, cache_one, policy, patient) == "permit"

    # unchanged: the next decision reuses the compiled rules (one counter read, no recompile)
    compiles = cache_two.compiles
    assert await _decide(second, cache_two, policy, patient) == "permit"
    assert cache_two.compiles == compiles

    # revoked through the second process: the first process's next decision denies
    await _write(
        second,
        policy,
        patient,
        {"id": consent_id, "status": "inactive", "permit": {"to": "ziekenhuizen-labs"}},
        update=True,
    )
    assert await _decide(first, cache_one, policy, patient) == "deny"
    async with first.read() as conn:
        assert await change_version(conn, patient) == 2


async def test_the_consents_that_applied_at_a_moment_come_from_the_versions(
    two_processes: tuple[Database, Database], policy: Policy, database_url: str
) -> None:
    first, _ = two_processes
    patient = f"Patient/p-{abs(hash(database_url)) % 10**8}-history"
    consent_id = f"h-{abs(hash(database_url)) % 10**8}"
    await _write(first, policy, patient, {"id": consent_id, "permit": {"to": "ziekenhuizen-labs"}})
    between: datetime = utcnow()
    await _write(
        first,
        policy,
        patient,
        {"id": consent_id, "status": "inactive", "permit": {"to": "ziekenhuizen-labs"}},
        update=True,
    )
    async with first.write() as conn:
        await ResourceStore(conn, REGISTRY).delete("Consent", consent_id)
        await note_consent_change(conn, patient, consent_id)
    async with first.read() as conn:
        versions = await consent_versions(conn, patient)
    assert [v.version_id for v in versions] == [1, 2, 3]
    assert [c["meta"]["versionId"] for c in consents_at(versions, between)] == ["1"]
    assert [c["id"] for c in in_force_at(versions, between)] == [consent_id]
    assert in_force_at(versions, utcnow()) == []
