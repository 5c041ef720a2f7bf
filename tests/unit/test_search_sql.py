"""Searches run against a real schema filled with real data, on SQLite and PostgreSQL.

The schema is made with `create_all` in a database of this module's own (on PostgreSQL a scratch database
beside the suite's), so the rows here are exactly the corpus below.
"""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.fhir.search.parser import parse_search
from rzcp.store.indexer import index_resource
from rzcp.store.search_sql import SearchResult, execute_search
from rzcp.store.tables import metadata, resources

from .test_indexer import nl_core, synthea

REG = SearchRegistry.default()
T0 = datetime(2024, 1, 1)


def obs(id_: str, status: str = "final", **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": status,
        "code": {"coding": [{"system": "urn:test", "code": "dates"}]},
        "subject": {"reference": "Patient/zoe"},
        **fields,
    }


CRAFTED = [
    obs("A", status="amended", effectiveDateTime="2020-01-15", valueQuantity={"value": 100, "unit": "mmHg"}),
    obs("B", effectiveDateTime="2020-02-01T10:00:00Z", valueQuantity={
        "value": 100.4, "system": "http://unitsofmeasure.org", "code": "mm[Hg]", "unit": "mmHg"}),
    obs("C", effectiveDateTime="2020-02", valueQuantity={
        "value": 5.4, "system": "http://unitsofmeasure.org", "code": "mg/dL", "unit": "mg/dL"}),
    obs("D", effectivePeriod={"start": "2020-01-20", "end": "2020-02-10"}),
    obs("E", effectiveDateTime="2021-06-01T00:00:00+02:00", valueQuantity={"value": 100.0, "unit": "mmHg"}),
    obs("F"),
    {"resourceType": "Patient", "id": "zoe", "name": [{"family": "van Dijk-Ørsted", "given": ["Zoë"]}],
     "birthDate": "1990-05-05",
     "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "111"}]},
]  # fmt: skip
DELETED = obs("deleted-A", status="amended", effectiveDateTime="2020-02-15", valueQuantity={"value": 100})


def corpus() -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in CRAFTED + synthea() + synthea("uscore_bundle_patient_355.json") + nl_core():
        seen.setdefault((r["resourceType"], r["id"]), r)
    return list(seen.values())


async def load(conn: AsyncConnection, data: list[dict[str, Any]]) -> None:
    res_rows, idx_rows = [], {}
    for pk, (resource, deleted) in enumerate([(r, False) for r in data] + [(DELETED, True)], start=1):
        res_rows.append(
            {"pk": pk, "res_type": resource["resourceType"], "res_id": resource["id"], "version_id": 1,
             "last_updated": T0 + timedelta(minutes=pk), "deleted": deleted, "content": json.dumps(resource)}
        )  # fmt: skip
        for table, rows in index_resource(resource, REG).items():
            idx_rows.setdefault(table, []).extend({**row, "res_pk": pk} for row in rows)
    await conn.execute(resources.insert(), res_rows)
    for table, rows in idx_rows.items():
        await conn.execute(metadata.tables[table].insert(), rows)


@pytest.fixture(scope="module")
async def engine(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncEngine]:
    scratch = None
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('search')}/search.db"
    else:
        scratch = f"rzcp_search_{uuid.uuid4().hex[:8]}"
        await pg_admin(database_url, f'CREATE DATABASE "{scratch}"')
        url = database_url.rsplit("/", 1)[0] + f"/{scratch}"
    eng = create_async_engine(url)
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await load(conn, corpus())
    yield eng
    await eng.dispose()
    if scratch:
        await pg_admin(database_url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


async def pg_admin(database_url: str, statement: str) -> None:
    import asyncpg

    dsn = database_url.rsplit("/", 1)[0].replace("postgresql+asyncpg", "postgresql") + "/postgres"
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def search(
    engine: AsyncEngine, res_type: str, *pairs: tuple[str, str], offset: int = 0
) -> SearchResult:
    query = parse_search(res_type, list(pairs), REG, strict=True, default_count=1000, max_count=1000)
    async with engine.connect() as conn:
        return await execute_search(conn, query, offset=offset)


async def ids(engine: AsyncEngine, res_type: str, *pairs: tuple[str, str]) -> set[str]:
    return {r.res_id for r in (await search(engine, res_type, *pairs)).matches}


DATES = ("code", "urn:test|dates")


def synthea_ids(res_type: str, where: Any) -> set[str]:
    data = synthea() + synthea("uscore_bundle_patient_355.json")
    return {r["id"] for r in data if r["resourceType"] == res_type and where(r)}


async def test_identifier(engine: AsyncEngine) -> None:
    assert await ids(engine, "Patient", ("identifier", "http://hl7.org/fhir/sid/us-ssn|999-47-5768")) == {
        "85"
    }
    assert await ids(engine, "Patient", ("identifier", "999-47-5768")) == {"85"}
    assert await ids(engine, "Patient", ("identifier", "|999-47-5768")) == set()
    assert await ids(engine, "Patient", ("identifier", "http://fhir.nl/fhir/NamingSystem/bsn|")) >= {"zoe"}
    of_type = "http://terminology.hl7.org/CodeSystem/v2-0203|SS|999-47-5768"
    assert await ids(engine, "Patient", ("identifier:of-type", of_type)) == {"85"}


async def test_reference(engine: AsyncEngine) -> None:
    expected = synthea_ids("Observation", lambda r: r["subject"]["reference"] == "Patient/85")
    assert len(expected) == 66
    assert await ids(engine, "Observation", ("subject", "Patient/85")) == expected
    assert await ids(engine, "Observation", ("patient", "85")) == expected
    assert await ids(engine, "Observation", ("subject:Patient", "85")) == expected
    assert await ids(engine, "Observation", ("subject", "Group/85")) == set()
    both = await ids(engine, "Observation", ("patient", "85,355"))
    assert both == expected | synthea_ids("Observation", lambda r: r["subject"]["reference"] == "Patient/355")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2020-02", "BC"), ("eq2020-02", "BC"), ("ne2020-02", "ADE"), ("gt2020-02", "E"), ("lt2020-02", "AD"),
     ("ge2020-02", "BCE"), ("le2020-02", "ABCD"), ("sa2020-01-31", "BCE"), ("eb2020-02-01", "A"),
     ("ap2021-06-01", "E"), ("2020-02-01T10:00:00Z", "B"), ("gt2020-02-05,lt2020-01-16", "ACDE")],
)  # fmt: skip
async def test_date_prefixes(engine: AsyncEngine, value: str, expected: str) -> None:
    assert await ids(engine, "Observation", DATES, ("date", value)) == set(expected)


async def test_date_and_is_an_intersection(engine: AsyncEngine) -> None:
    assert await ids(engine, "Observation", DATES, ("date", "ge2020-01-16"), ("date", "lt2020-02-01")) == {
        "D"
    }


async def test_codes(engine: AsyncEngine) -> None:
    def has(code: str) -> Any:
        return lambda r: any(c.get("code") == code for c in r["code"].get("coding", []))

    body_height = synthea_ids("Observation", has("8302-2")) | {"nl-core-BodyHeight-01"}  # nl-core has one too
    assert await ids(engine, "Observation", ("code", "http://loinc.org|8302-2")) == body_height
    assert await ids(engine, "Observation", ("code", "http://snomed.info/sct|8302-2")) == set()
    head = synthea_ids("Observation", has("9843-4"))
    assert head and await ids(engine, "Observation", ("code:text", "head circ")) == head
    assert head < await ids(engine, "Observation", ("code:text", "circumference"))  # any word start
    assert await ids(engine, "Observation", ("code:text", "ircumference")) == set()
    assert await ids(engine, "Observation", DATES, ("status:not", "final")) == {"A"}


async def test_strings(engine: AsyncEngine) -> None:
    assert await ids(engine, "Patient", ("family", "bos")) == {"85"}
    assert await ids(engine, "Patient", ("family:exact", "Bosco882")) == {"85"}
    assert await ids(engine, "Patient", ("family:exact", "bosco882")) == set()
    assert await ids(engine, "Patient", ("name:contains", "CIEN40")) == {"85"}
    assert await ids(engine, "Patient", ("given", "zoe")) == {"zoe"}
    assert await ids(engine, "Patient", ("family", "VAN DIJK-ørsted")) == {"zoe"}
    assert await ids(engine, "Patient", ("family:contains", "%")) == set()  # a LIKE wildcard is data


@pytest.mark.parametrize(
    ("value", "expected"),
    [("100", "ABE"), ("100.0", "AE"), ("100.4", "B"), ("gt100", "B"), ("ge100", "ABE"), ("lt100", "C"),
     ("ap100", "ABE"), ("ne100", "C"), ("5.4|http://unitsofmeasure.org|mg/dL", "C"),
     ("5.4|http://snomed.info/sct|mg/dL", ""), ("100||mmHg", "ABE"), ("gt1||mm[Hg]", "B")],
)  # fmt: skip
async def test_quantities(engine: AsyncEngine, value: str, expected: str) -> None:
    assert await ids(engine, "Observation", DATES, ("value-quantity", value)) == set(expected)


async def test_missing_and_deleted(engine: AsyncEngine) -> None:
    assert await ids(engine, "Observation", DATES, ("date:missing", "true")) == {"F"}
    assert await ids(engine, "Observation", DATES, ("value-quantity:missing", "false")) == set("ABCE")
    assert "deleted-A" not in await ids(engine, "Observation", DATES)
    assert await ids(engine, "Observation", ("_id", "deleted-A")) == set()


async def test_sort_paging_and_total(engine: AsyncEngine) -> None:
    async def order(*pairs: tuple[str, str]) -> list[str]:
        return [r.res_id for r in (await search(engine, "Observation", DATES, *pairs)).matches]

    assert await order(("_sort", "date")) == list("ADCBEF")
    assert await order(("_sort", "-date")) == list("ECDBAF")
    assert await order(("_sort", "status,-_id")) == list("AFEDCB")
    assert await order() == list("ABCDEF")  # last_updated, then pk
    page = await search(
        engine, "Observation", DATES, ("_sort", "date"), ("_count", "4"), ("_total", "accurate"), offset=4
    )
    assert [r.res_id for r in page.matches] == ["E", "F"] and not page.has_more and page.total == 6
    first = await search(engine, "Observation", DATES, ("_count", "4"))
    assert first.has_more and first.total is None
    count = await search(engine, "Observation", DATES, ("_summary", "count"))
    assert count.total == 6 and count.matches == []


async def test_last_updated_and_id(engine: AsyncEngine) -> None:
    assert await ids(engine, "Observation", DATES, ("_lastUpdated", "le2024-01-01T00:03:00Z")) == {
        "A",
        "B",
        "C",
    }
    assert await ids(engine, "Observation", ("_id", "A,F")) == {"A", "F"}


async def test_include_and_revinclude(engine: AsyncEngine) -> None:
    result = await search(engine, "Observation", ("_id", "A,B"), ("_include", "Observation:subject"))
    assert [(r.res_type, r.res_id, r.mode) for r in result.included] == [("Patient", "zoe", "include")]
    assert json.loads(result.included[0].content)["name"][0]["given"] == ["Zoë"]
    none = await search(engine, "Observation", ("_id", "A"), ("_include", "Observation:subject:Group"))
    assert none.included == []
    rev = await search(engine, "Patient", ("_id", "zoe"), ("_revinclude", "Observation:subject"))
    assert {r.res_id for r in rev.matches} == {"zoe"}
    assert {r.res_id for r in rev.included} == set("ABCDEF")  # the deleted one is not included
