"""Federated pull end to end: the gateway and its members as real HTTP servers on loopback.

The region: a GP practice, a hospital and a GGZ clinic hold data for one Synthea patient (each under its
own ids); a pharmacy asks. The patient permits pharmacies everything and refuses anything from GGZ; the GP
also holds a psychiatric (PSY-labelled) diagnosis that no consent names.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import orjson
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import text

from rzcp.app import create_app
from rzcp.exchange.adapters import SearchOutcome, SearchQuery
from rzcp.exchange.breaker import BreakerBoard, BreakerState
from rzcp.exchange.directory import Member, MemberChange
from rzcp.exchange.gates import MemberGates
from rzcp.exchange.pace import MemberPace
from rzcp.exchange.service import Exchange
from rzcp.membersim.bsn import derive_test_bsn
from rzcp.store.db import Database
from tests.exchange.conftest import FakeClock
from tests.exchange.region import (
    GATEWAY,
    PSY,
    Region,
    SimMember,
    _migrate,
    entries,
    gateway_settings,
    load_member,
    member_app,
    merged_ids,
    source_of,
    synthea_ids,
)
from tests.exchange.servers import ScriptedMember, answer, free_port, searchset, serve, slow

PSY_CONDITION = {
    "resourceType": "Condition",
    "id": "gp-psy-1",
    "meta": {"security": [PSY]},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007", "display": "Depression"}]},
}


@dataclass
class World:
    region: Region
    app: Any
    exchange: Exchange
    gp: SimMember
    hospital: SimMember
    ggz: SimMember
    scripted: ScriptedMember
    scripted_ura: str
    down_ura: str
    pharmacy: httpx.AsyncClient
    patient: str
    bsn: str
    lonely: str  # a patient held by the scripted member only
    lonely_bsn: str
    clock: FakeClock


SCRIPTED_DEADLINE = 2.0


OPENAPI_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, clock: FakeClock
) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("pull")
    patient_local = next(iter(synthea_ids("Patient", "gp-")))
    psy = {**PSY_CONDITION, "subject": {"reference": f"Patient/{patient_local}"}}
    gp_db, gp_patients = await load_member(tmp, "gp-", GP_TYPES, [psy])
    zh_db, zh_patients = await load_member(tmp, "zh-", ZH_TYPES)
    ggz_db, ggz_patients = await load_member(tmp, "ggz-", ["Condition"])
    settings = gateway_settings(database_url)
    await _migrate(database_url)
    app = create_app(settings)
    exchange: Exchange = app.state.exchange
    exchange.adapters.context.breakers = BreakerBoard(failure_threshold=2, cool_down=30.0, clock=clock)
    scripted = ScriptedMember(handler=answer(searchset()))
    gp_app = member_app("Huisartsenpraktijk De Linde", "x", gp_db)
    zh_app = member_app("Ziekenhuis Rijnstad", "x", zh_db)
    ggz_app = member_app("GGZ De Oever", "x", ggz_db)
    with (
        serve(app) as url,
        serve(gp_app) as gp_url,
        serve(zh_app) as zh_url,
        serve(ggz_app) as ggz_url,
        serve(scripted) as scripted_url,
    ):
        region = Region(settings, url)
        gp = await region.add_member("Huisartsenpraktijk De Linde", "huisartsen", gp_url)
        zh = await region.add_member("Ziekenhuis Rijnstad", "ziekenhuizen-labs", zh_url)
        ggz = await region.add_member("GGZ De Oever", "ggz", ggz_url)
        # Two seconds: a loaded CI machine can take more than half a second over a healthy answer, and the
        # tests of a late answer sleep well past this deadline.
        sc = await region.add_member("Scripted", "huisartsen", scripted_url, timeout=SCRIPTED_DEADLINE)
        down = await region.add_member("Down", "huisartsen", f"http://127.0.0.1:{free_port()}", timeout=0.5)
        pharmacy = await region.add_member("Apotheek Centraal", "apotheken", "http://127.0.0.1:9/")
        ids = await region.announce(gp.ura, gp_patients)
        await region.announce(zh.ura, zh_patients)
        await region.announce(ggz.ura, ggz_patients)
        bsn = next(iter(gp_patients.values()))
        patient = ids[bsn]
        lonely_bsn = derive_test_bsn("lonely-patient", {bsn})
        lonely = (await region.announce(sc.ura, {"sc-lonely": lonely_bsn}))[lonely_bsn]
        for who in (patient, lonely):
            await region.consent(who, {"permit": {"to": "apotheken"}})
        await region.consent(patient, {"deny": {"from": "ggz"}})
        client = await region.client_for(await region.add_client(pharmacy.ura))
        yield World(
            region,
            app,
            exchange,
            SimMember(gp.ura, gp.name, "huisartsen", gp_url, gp_db, gp_app, gp_patients),
            SimMember(zh.ura, zh.name, "ziekenhuizen-labs", zh_url, zh_db, zh_app, zh_patients),
            SimMember(ggz.ura, ggz.name, "ggz", ggz_url, ggz_db, ggz_app, ggz_patients),
            scripted,
            sc.ura,
            down.ura,
            client,
            patient,
            bsn,
            lonely,
            lonely_bsn,
            clock,
        )
        await client.aclose()
        await region.close()


@pytest.fixture(autouse=True)
def fresh_breakers(world: World) -> Iterator[None]:
    world.exchange.breakers._breakers.clear()
    world.scripted.handler = answer(searchset())
    world.scripted.hits.clear()
    yield


@asynccontextmanager
async def announced(world: World, ura: str, local: str, bsn: str | None = None) -> AsyncIterator[None]:
    """The member announces the shared patient for the duration of one test."""
    bsn = bsn or world.bsn
    await world.region.announce(ura, {local: bsn})
    try:
        yield
    finally:
        async with world.region.db.write() as conn:
            await world.region.locator.withdraw(conn, ura, bsn, local)


GP_TYPES = ["Condition", "MedicationRequest"]
ZH_TYPES = ["Condition", "Observation", "Procedure"]


def expected(world: World, *types: str) -> set[str]:
    """What the GP and the hospital hold of these types, a record they hold alike once."""
    members = [(world.gp.ura, "gp-", GP_TYPES), (world.hospital.ura, "zh-", ZH_TYPES)]
    return merged_ids(members, set(types))


def issues(bundle: dict[str, Any]) -> list[str]:
    return [i["diagnostics"] for o in entries(bundle, "outcome") for i in o["issue"]]


async def test_a_pull_across_members_with_mixed_consent(world: World) -> None:
    before = list(world.ggz.counter.paths)
    response = await world.pharmacy.get(
        "/fhir/Condition", params={"patient": f"Patient/{world.patient}", "_count": "500"}
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    found = entries(bundle)
    # Exactly the GP's and the hospital's conditions: nothing of GGZ, not the GP's PSY diagnosis.
    assert {r["id"] for r in found} == expected(world, "Condition")
    assert "gp-psy-1" not in {r["id"] for r in found}
    assert not any(r["id"].startswith("ggz-") for r in found)
    assert bundle["total"] == len(found) == len(expected(world, "Condition"))
    assert issues(bundle) == []  # the shielded member leaves no warning either
    # The GGZ clinic was never asked.
    assert world.ggz.counter.paths == before
    # Tagged with the source, the patient reference is the regional Patient.
    for resource in found:
        member = world.gp if resource["id"].startswith("gp-") else world.hospital
        assert source_of(resource) == member.ura
        assert resource["meta"]["source"] == f"{member.base}/fhir"
        assert resource["subject"]["reference"] == f"http://gateway.test/fhir/Patient/{world.patient}"


async def test_the_pulled_type_is_the_paths_whatever_the_query_says(world: World) -> None:
    # The type once was a defaulted endpoint parameter, which FastAPI read from the query string too.
    response = await world.pharmacy.get(
        "/fhir/Condition",
        params={"patient": f"Patient/{world.patient}", "_count": "500", "res_type": "Observation"},
    )
    assert response.status_code == 200, response.text
    found = entries(response.json())
    assert {r["resourceType"] for r in found} == {"Condition"}
    assert {r["id"] for r in found} == expected(world, "Condition")


async def test_the_answer_for_a_shielded_member_is_that_of_no_data(world: World) -> None:
    """With the GGZ clinic's location withdrawn, the answer is the same, byte for byte but links."""
    first = (
        await world.pharmacy.get("/fhir/Condition", params={"patient": world.patient, "_count": "500"})
    ).json()
    async with world.region.db.write() as conn:
        ggz_local = next(iter(world.ggz.patients))
        await world.region.locator.withdraw(conn, world.ggz.ura, world.bsn, ggz_local)
    try:
        second = (
            await world.pharmacy.get("/fhir/Condition", params={"patient": world.patient, "_count": "500"})
        ).json()
    finally:
        await world.region.announce(world.ggz.ura, world.ggz.patients)
    strip = lambda b: {k: v for k, v in b.items() if k != "link"}  # noqa: E731
    assert orjson.dumps(strip(first), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        strip(second), option=orjson.OPT_SORT_KEYS
    )


async def test_a_permitted_members_sensitive_entry_is_withheld_and_reported(world: World) -> None:
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    response = await world.pharmacy.get("/fhir/Condition", params={"patient": world.patient, "_count": "500"})
    assert "gp-psy-1" not in response.text
    assert issues(response.json()) == []  # the requester is not told that something was kept from it
    # The GP does return it to the gateway (it is there), the gateway withholds it.
    assert "gp-psy-1" in {r["id"] for r in await world.gp.stored("Condition")}
    # and the audit record says so, for the administrators (a privacy officer found no trace of it)
    (record,) = [
        orjson.loads(r.content) for r in await _audit_rows(world, after=start) if "Condition" in r.content
    ]
    assert f"source {world.gp.ura} entries dropped: withheld-by-consent 1" in record["outcomeDesc"]


async def _audit_rows(world: World, after: int = 0) -> list[Any]:
    """The gateway's audit records after `seq` (the database is shared with the rest of the suite)."""
    database = Database(world.region.settings.database_url)
    try:
        async with database.read() as conn:
            query = text("SELECT seq, patient, content FROM audit_events WHERE seq > :after ORDER BY seq")
            return list((await conn.execute(query, {"after": after})).all())
    finally:
        await database.dispose()


async def test_search_by_the_patients_bsn_and_paging(world: World) -> None:
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    bsn = f"http://fhir.nl/fhir/NamingSystem/bsn|{world.bsn}"
    response = await world.pharmacy.get("/fhir/Condition", params={"patient.identifier": bsn, "_count": "10"})
    page = response.json()
    assert response.status_code == 200
    ids = [r["id"] for r in entries(page)]
    assert len(ids) == 10
    page_sizes = [len(ids)]
    while nxt := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = (await world.pharmacy.get(nxt.replace("http://gateway.test", ""))).json()
        ids += [r["id"] for r in entries(page)]
        page_sizes.append(len(entries(page)))
    assert len(ids) == len(set(ids)) and set(ids) == expected(world, "Condition")
    # each page's record counts what that page carried (found by a trial: every page said the whole)
    paged = [_returned(r.content) for r in await _audit_rows(world, after=start)]
    assert paged == page_sizes and len(page_sizes) > 1
    # _count=0: the total alone, as the store answers it (found by an integrator: it gave one entry and a
    # next link that led back to the same page)
    counted = await world.pharmacy.get("/fhir/Condition", params={"patient.identifier": bsn, "_count": "0"})
    assert counted.status_code == 200, counted.text
    assert counted.json()["total"] == len(ids) and entries(counted.json()) == []
    assert [link["relation"] for link in counted.json()["link"]] == ["self"]
    # the audit records of these searches name the patient by the regional id; the BSN is nowhere
    rows = await _audit_rows(world, after=start)
    asked = [r for r in rows if "NamingSystem/bsn|*" in _queries(r.content)]
    assert asked and all(r.patient == f"Patient/{world.patient}" for r in asked)
    assert not [r for r in rows if world.bsn in r.content or world.bsn in _queries(r.content)]


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Condition?patient.identifier={bsn}",  # no system: refused (400), and recorded
        "/fhir/Condition?patient.identifier=urn:oid:2.16.840.1.113883.2.4.6.3|{bsn}",
        "/fhir/Condition?patient={bsn}",
        "/fhir/Condition?subject:Patient.identifier=http://fhir.nl/fhir/NamingSystem/bsn|{bsn}",
        "/fhir/Patient?identifier={bsn}",
        "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|{bsn}",
        "/fhir/Patient?identifier:text={bsn}",
        "/fhir/Patient/{bsn}/$everything",
    ],
)
async def test_no_bsn_in_the_record_however_it_was_asked(world: World, url: str) -> None:
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    response = await world.pharmacy.get(url.format(bsn=world.bsn))
    assert response.status_code < 500, response.text
    (row,) = await _audit_rows(world, after=start)
    assert world.bsn not in row.content and world.bsn not in _queries(row.content)
    assert row.patient in (None, f"Patient/{world.patient}")


def _returned(content: str) -> int:
    """The number of resources an AuditEvent says went out (its `returned` entities' counts)."""
    entities = orjson.loads(content).get("entity", ())
    return sum(
        int(d["valueString"])
        for e in entities
        if e.get("description") == "returned"
        for d in e.get("detail", ())
        if d.get("type") == "count"
    )


async def test_the_regional_patient_found_by_bsn_is_recorded_as_sent(world: World) -> None:
    """The patient's access log must not say "nothing was shared" when their details went out."""
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    bsn = f"http://fhir.nl/fhir/NamingSystem/bsn|{world.bsn}"
    async with announced(world, world.scripted_ura, "sc-pat"):
        found = await world.pharmacy.get("/fhir/Patient", params={"identifier": bsn})
    assert found.status_code == 200 and found.json()["total"] == 1
    rows = [r for r in await _audit_rows(world, after=start) if r.patient == f"Patient/{world.patient}"]
    assert [_returned(r.content) for r in rows if "NamingSystem/bsn" in _queries(r.content)] == [1]


async def test_a_pull_refused_before_it_ran_is_recorded_as_a_search_by_its_caller(world: World) -> None:
    """A refused purpose stops a pull before any member is asked; the record still says a search of the
    type by that member's system (it said "read", by someone unauthenticated)."""
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    refused = await world.pharmacy.get(
        "/fhir/Condition", params={"patient": world.patient}, headers={"X-Purpose-Of-Use": "SHOPPING"}
    )
    assert refused.status_code == 400, refused.text
    (row,) = await _audit_rows(world, after=start)
    event = orjson.loads(row.content)
    assert event["subtype"][0]["code"] == "search-type" and event["outcome"] != "0"
    assert "unauthenticated" not in row.content


async def test_a_search_by_bsn_applies_its_result_parameters_and_refuses_what_it_cannot(world: World) -> None:
    """The locator answers a search by BSN: `_summary=count` and `_elements` are applied (they were
    ignored: the whole Patient went out, and was recorded so), another search parameter is refused (it was
    ignored: the patient came back whatever the birthdate asked)."""
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    bsn = f"http://fhir.nl/fhir/NamingSystem/bsn|{world.bsn}"
    async with announced(world, world.scripted_ura, "sc-pat"):
        counted = await world.pharmacy.get("/fhir/Patient", params={"identifier": bsn, "_summary": "count"})
        assert counted.status_code == 200 and counted.json()["total"] == 1 and "entry" not in counted.json()
        (row,) = await _audit_rows(world, after=start)
        assert _returned(row.content) == 0  # nothing went out
        shaped = await world.pharmacy.get("/fhir/Patient", params={"identifier": bsn, "_elements": "gender"})
        (entry,) = entries(shaped.json())
        assert set(entry) <= {"resourceType", "id", "meta", "gender"}
        assert any(tag["code"] == "SUBSETTED" for tag in entry["meta"]["tag"])
        # a member's system is refused other search parameters outright (403); a bad result parameter is a 400
        for extra, status in (
            ({"birthdate": "1990"}, 403),
            ({"_summary": "bogus"}, 400),
            ({"_count": "x"}, 400),
        ):
            refused = await world.pharmacy.get("/fhir/Patient", params={"identifier": bsn, **extra})
            assert refused.status_code == status, (extra, refused.text)
            assert refused.json()["resourceType"] == "OperationOutcome"


async def test_links_name_the_configured_base_whatever_host_the_request_names(world: World) -> None:
    """A caller chooses its Host header, and behind a proxy it is the internal address: the audit search's
    paging links and the BSN search's self link followed it (an operator's trial)."""
    evil = {"Host": "evil.example"}
    bsn = f"http://fhir.nl/fhir/NamingSystem/bsn|{world.bsn}"
    async with announced(world, world.scripted_ura, "sc-pat"):
        found = (await world.pharmacy.get("/fhir/Patient", params={"identifier": bsn}, headers=evil)).json()
    auditor = await world.region.add_client(world.scripted_ura, scope="system/*.rs", role="auditor")
    http = await world.region.client_for(auditor, "system/*.rs")
    try:
        trail = (await http.get("/fhir/AuditEvent", params={"_count": "1"}, headers=evil)).json()
    finally:
        await http.aclose()
    urls = [link["url"] for bundle in (found, trail) for link in bundle["link"]]
    urls += [entry["fullUrl"] for bundle in (found, trail) for entry in bundle.get("entry", ())]
    assert len(urls) >= 4 and all(url.startswith(GATEWAY + "/") for url in urls), urls


def _queries(content: str) -> str:
    """The recorded queries of an AuditEvent (base64 in entity.query), decoded and unquoted."""
    entities = orjson.loads(content).get("entity", ())
    return " ".join(unquote(base64.b64decode(e["query"]).decode()) for e in entities if e.get("query"))


async def test_unknown_patient_is_an_empty_bundle(world: World) -> None:
    response = await world.pharmacy.get("/fhir/Condition", params={"patient": "no-such-patient"})
    assert response.status_code == 200 and response.json()["total"] == 0
    assert "entry" not in response.json()  # FHIR JSON has no empty arrays
    response = await world.pharmacy.get("/fhir/Condition")
    assert response.status_code == 400


async def test_everything(world: World) -> None:
    before = list(world.ggz.counter.paths)
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    response = await world.pharmacy.get(
        f"/fhir/Patient/{world.patient}/$everything", params={"_count": "500"}
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    found = entries(bundle)
    # The regional Patient itself leads, as the gateway keeps it: its regional id, no BSN.
    assert found[0]["resourceType"] == "Patient" and found[0]["id"] == world.patient
    assert bundle["entry"][0]["fullUrl"] == f"http://gateway.test/fhir/Patient/{world.patient}"
    assert world.bsn not in response.text
    assert bundle["total"] == len(found)
    clinical = found[1:]
    assert {r["id"] for r in clinical} == expected(
        world, "Condition", "MedicationRequest", "Observation", "Procedure"
    )
    assert {r["resourceType"] for r in clinical} == {
        "Condition",
        "MedicationRequest",
        "Observation",
        "Procedure",
    }
    assert world.ggz.counter.paths == before
    # The record counts the Patient the gateway itself sent, with no source member.
    (record,) = [orjson.loads(r.content) for r in await _audit_rows(world, after=start)]
    sent = [e for e in record["entity"] if e.get("description") == "returned"]
    own = [e for e in sent if e["type"]["code"] == "Patient"]
    assert [{d["type"]: d["valueString"] for d in e["detail"]} for e in own] == [{"count": "1"}]
    # Asked for some types only, the Patient comes only when named.
    response = await world.pharmacy.get(
        f"/fhir/Patient/{world.patient}/$everything", params={"_type": "Condition"}
    )
    assert {r["resourceType"] for r in entries(response.json())} == {"Condition"}
    response = await world.pharmacy.get(
        f"/fhir/Patient/{world.patient}/$everything", params={"_type": "Patient,Condition"}
    )
    assert [r["resourceType"] for r in entries(response.json())][:1] == ["Patient"]
    # a type R4 does not have is a typo, said as one, not an empty answer (an integrator's walkthrough)
    response = await world.pharmacy.get(
        f"/fhir/Patient/{world.patient}/$everything", params={"_type": "Condition,Foo"}
    )
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["_type"] and "Foo is no R4 resource type" in issue["diagnostics"]


# --- members that misbehave, seen through the gateway -------------------------------------------------


async def test_a_pull_asks_the_member_slowest_lately_first_and_answers_in_source_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    registry = world.exchange.adapters
    real = registry.for_member

    class Recording:
        """The member's own adapter, noting the order in which the pull calls it."""

        def __init__(self, member: Member) -> None:
            self.adapter = real(member)

        async def search(self, member: Member, query: SearchQuery) -> SearchOutcome:
            asked.append(member.ura)
            return await self.adapter.search(member, query)

    monkeypatch.setattr(registry, "for_member", Recording)
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    answers = []
    for slow_one, fast_one in ((world.hospital.ura, world.gp.ura), (world.gp.ura, world.hospital.ura)):
        pace = MemberPace()
        pace.note(slow_one, 900.0)
        pace.note(fast_one, 5.0)
        monkeypatch.setattr(world.exchange, "pace", pace)
        asked.clear()
        response = await world.pharmacy.get("/fhir/Condition", params=params)
        assert response.status_code == 200, response.text
        assert asked == [slow_one, fast_one]
        answers.append([(e["fullUrl"], e["resource"]["meta"]["source"]) for e in response.json()["entry"]])
        assert (pace.expected_ms(slow_one) or 900.0) < 900.0  # the pull's own answer times count
    assert answers[0] == answers[1]  # the same Bundle, in the same order, whichever member went first
    assert {url.rsplit("/", 1)[1] for url, _ in answers[0]} == expected(world, "Condition")


def counting(seconds: float, body: bytes, seen: list[int]) -> Any:
    """A member that takes `seconds` over each request and notes how many were under way at once."""
    under_way = 0

    async def handler(_request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        nonlocal under_way
        under_way += 1
        seen.append(under_way)
        try:
            await asyncio.sleep(seconds)
        finally:
            under_way -= 1
        return 200, {}, body

    return handler


async def test_a_member_has_a_few_pulls_of_the_gateway_under_way_at_a_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    world.scripted.handler = counting(0.2, searchset(), seen)
    monkeypatch.setattr(world.exchange, "gates", MemberGates(2))
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    async with announced(world, world.scripted_ura, "sc-pat"):
        pulls = await asyncio.gather(
            *(world.pharmacy.get("/fhir/Condition", params=params) for _ in range(6))
        )
        assert all(r.status_code == 200 for r in pulls)
        assert not any(issues(r.json()) for r in pulls)  # every pull had its turn in time
        assert {r["id"] for r in entries(pulls[0].json())} == expected(world, "Condition")
        assert len(seen) == 6 and max(seen) == 2
        # one pull is one turn, whatever it asks the member for: $everything's searches go out together
        # (each held a second, so all are under way at once even on a loaded machine: at 0.2 s the first
        # had ended before the last began, in one full run)
        world.scripted.handler = counting(1.0, searchset(), seen)
        seen.clear()
        everything = await world.pharmacy.get(f"/fhir/Patient/{world.patient}/$everything")
        assert everything.status_code == 200, everything.text
        assert len(seen) == len(world.exchange.pull_types) and max(seen) == len(seen)


def _deep_condition_answer(levels: int) -> bytes:
    """A searchset with one Condition of the scripted member's patient carrying `levels` nested extensions,
    written by hand: orjson itself writes no more than 254 levels."""
    inner = '{"url": "http://example.org/leaf", "valueString": "x"}'
    for _ in range(levels - 1):
        inner = '{"url": "http://example.org/step", "extension": [' + inner + "]}"
    condition = (
        '{"resourceType": "Condition", "id": "deep", "subject": {"reference": "Patient/sc-pat"}, '
        '"extension": [' + inner + "]}"
    )
    return (
        '{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": ' + condition + "}]}"
    ).encode()


async def test_a_members_answer_nested_too_deeply_to_pass_on_is_its_failure_not_the_pulls(
    world: World,
) -> None:
    """Found by review: one member's entry nested past what orjson writes (150 extensions, 300 levels)
    made every pull of its patients a 500, the other members' data included."""
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    async with announced(world, world.scripted_ura, "sc-pat"):
        world.scripted.handler = answer(_deep_condition_answer(100))
        kept = await world.pharmacy.get("/fhir/Condition", params=params)
        assert kept.status_code == 200 and "deep" in {r["id"] for r in entries(kept.json())}
        world.scripted.handler = answer(_deep_condition_answer(150))
        response = await world.pharmacy.get("/fhir/Condition", params=params)
    assert response.status_code == 200, response.text
    assert {r["id"] for r in entries(response.json())} == expected(world, "Condition")  # the others' data
    [warning] = issues(response.json())
    assert "Scripted" in warning


async def test_a_patient_reference_to_another_server_names_no_one_here(world: World) -> None:
    """Found by a probe: `patient=http://evil.example/fhir/Patient/<id>` was answered with the regional
    patient's data, and an empty `patient=` with an empty Bundle."""
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    answer = await world.pharmacy.get("/fhir/Condition", params=params)
    assert answer.status_code == 200
    base = answer.json()["link"][0]["url"].split("/Condition?")[0]
    absolute = await world.pharmacy.get(
        "/fhir/Condition", params={**params, "patient": f"{base}/Patient/{world.patient}"}
    )
    assert absolute.status_code == 200
    assert {r["id"] for r in entries(absolute.json())} == {r["id"] for r in entries(answer.json())}
    for other in (f"http://evil.example/fhir/Patient/{world.patient}", "", "Organization/x", "Patient/a/b"):
        refused = await world.pharmacy.get("/fhir/Condition", params={**params, "patient": other})
        assert refused.status_code == 400, (other, refused.text)
        assert refused.json()["resourceType"] == "OperationOutcome"


async def test_an_operators_change_to_a_member_counts_from_the_next_pull(world: World) -> None:
    """`rzcp members update` / PATCH /admin/api/members: the member's own capacity paces the pulls, and a
    moved endpoint is called from the next pull on (every process reads the member's rows per pull)."""
    seen: list[int] = []
    world.scripted.handler = counting(0.1, searchset(), seen)
    old = (await world.region.members([world.scripted_ura]))[world.scripted_ura]
    moved = ScriptedMember(handler=answer(searchset()))
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    try:
        async with announced(world, world.scripted_ura, "sc-pat"):
            await world.region.update_member(
                world.scripted_ura, MemberChange(max_pulls=1)
            )  # a small practice
            pulls = await asyncio.gather(
                *(world.pharmacy.get("/fhir/Condition", params=params) for _ in range(4))
            )
            assert all(r.status_code == 200 and not issues(r.json()) for r in pulls)
            assert len(seen) == 4 and max(seen) == 1  # one at a time, not the gateway's default of eight
            with serve(moved) as moved_url:
                await world.region.update_member(
                    world.scripted_ura, MemberChange(endpoint=f"{moved_url}/fhir")
                )
                before = len(world.scripted.hits)
                response = await world.pharmacy.get("/fhir/Condition", params=params)
                assert response.status_code == 200 and not issues(response.json())
                assert len(moved.hits) == 1 and len(world.scripted.hits) == before
                assert ("patient", "Patient/sc-pat") in parse_qsl(moved.hits[0].query)
    finally:
        await world.region.update_member(world.scripted_ura, MemberChange(endpoint=old.base_url, max_pulls=0))
    restored = (await world.region.members([world.scripted_ura]))[world.scripted_ura]
    assert restored.base_url == old.base_url and restored.max_pulls is None  # 0: the gateway's default


async def test_a_pull_that_gets_no_turn_in_time_leaves_the_member_out_with_a_warning(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    world.scripted.handler = counting(0.0, searchset(), seen)
    gates = MemberGates(1)
    monkeypatch.setattr(world.exchange, "gates", gates)
    pace = MemberPace()
    monkeypatch.setattr(world.exchange, "pace", pace)
    taken = await gates.enter(world.scripted_ura, 0.1)  # another pull holds the member's only turn
    assert taken is not None
    refused = REGISTRY.get_sample_value("rzcp_pull_no_turn_total", {"member": world.scripted_ura}) or 0
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    try:
        async with announced(world, world.scripted_ura, "sc-pat"):
            response = await world.pharmacy.get("/fhir/Condition", params=params)
    finally:
        gates.leave(taken)
    assert response.status_code == 200
    assert {r["id"] for r in entries(response.json())} == expected(world, "Condition")  # the others' data
    assert seen == []  # nothing reached the member
    [warning] = issues(response.json())
    assert "Scripted" in warning and "could not be asked in time" in warning
    # the audit record says the member was not asked for want of a turn, which is not the member's failure
    # (the console's health and failure counts read "failed" and "timeout"), and its pace learns nothing
    descs = [orjson.loads(r.content).get("outcomeDesc", "") for r in await _audit_rows(world, after=start)]
    parts = [part for d in descs for part in d.split("; ") if world.scripted_ura in part]
    assert parts == [f"source {world.scripted_ura} no-turn"]
    assert pace.expected_ms(world.scripted_ura) is None
    assert REGISTRY.get_sample_value("rzcp_pull_no_turn_total", {"member": world.scripted_ura}) == refused + 1


async def test_the_wait_for_a_turn_counts_against_the_members_deadline(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    world.scripted.handler = counting(0.8 * SCRIPTED_DEADLINE, searchset(), seen)
    gates = MemberGates(1)
    monkeypatch.setattr(world.exchange, "gates", gates)
    taken = await gates.enter(world.scripted_ura, 0.1)
    assert taken is not None
    held = asyncio.get_running_loop().call_later(0.4 * SCRIPTED_DEADLINE, gates.leave, taken)
    params = {"patient": f"Patient/{world.patient}", "_count": "500"}
    try:
        async with announced(world, world.scripted_ura, "sc-pat"):
            started = time.monotonic()
            response = await world.pharmacy.get("/fhir/Condition", params=params)
            took = time.monotonic() - started
    finally:
        held.cancel()
    # its turn came after 40% of the deadline and the member takes 80%: over the member's one deadline
    assert seen == [1]
    [warning] = issues(response.json())
    assert "Scripted" in warning and "did not answer in time" in warning
    assert took < 1.5 * SCRIPTED_DEADLINE
    assert {r["id"] for r in entries(response.json())} == expected(world, "Condition")


async def test_a_turn_is_given_back_only_when_all_of_the_pulls_calls_to_the_member_ended(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One of `$everything`'s calls fails inside the gateway (a fault, not the member's answer): the pull
    fails, and the member's turn stays taken until its other calls, still under way, have ended."""
    gates = MemberGates(2)
    monkeypatch.setattr(world.exchange, "gates", gates)
    registry = world.exchange.adapters
    real = registry.for_member
    free_at_the_end: list[int] = []

    class Faulty:
        def __init__(self, member: Member) -> None:
            self.adapter = real(member)

        async def search(self, member: Member, query: SearchQuery) -> SearchOutcome:
            if member.ura != world.scripted_ura:
                return await self.adapter.search(member, query)
            if query.resource_type == "Condition":
                raise RuntimeError("a fault in the gateway")
            await asyncio.sleep(0.3)
            free_at_the_end.append(gates._gates[member.ura].under_way)
            return SearchOutcome(member.ura)

    monkeypatch.setattr(registry, "for_member", Faulty)
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(f"/fhir/Patient/{world.patient}/$everything")
    assert response.status_code == 500
    assert len(free_at_the_end) == len(world.exchange.pull_types) - 1
    assert set(free_at_the_end) == {1}  # the pull's turn was still taken when each call ended
    assert gates._gates[world.scripted_ura].under_way == 0  # and given back after


async def test_a_slow_member_adds_a_warning_and_the_rest_comes_back(world: World) -> None:
    world.scripted.handler = slow(3 * SCRIPTED_DEADLINE, searchset())
    async with announced(world, world.scripted_ura, "sc-pat"):
        started = time.monotonic()
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
        elapsed = time.monotonic() - started
    bundle = response.json()
    assert response.status_code == 200
    assert {r["id"] for r in entries(bundle)} == expected(world, "Condition")
    assert elapsed < 2 * SCRIPTED_DEADLINE  # the member's own deadline, not its sleep
    [warning] = entries(bundle, "outcome")
    assert warning["issue"][0]["code"] == "incomplete"
    assert "Scripted" in warning["issue"][0]["diagnostics"]
    assert "in time" in warning["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "handler",
    [answer(b"{}", status=500), answer(b"this is not json"), answer(b'{"resourceType":"Patient"}')],
    ids=["500", "garbage", "not-a-bundle"],
)
async def test_a_failing_member_adds_a_warning(world: World, handler: Any) -> None:
    world.scripted.handler = handler
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
    bundle = response.json()
    assert response.status_code == 200
    assert {r["id"] for r in entries(bundle)} == expected(world, "Condition")
    assert len(issues(bundle)) == 1 and "Scripted" in issues(bundle)[0]


def _garbled(*extra: dict[str, Any], **bundle: Any) -> bytes:
    """The scripted member's answer: its Condition for the patient, `extra` entries, odd top-level parts."""
    mine = {"resourceType": "Condition", "id": "sc-1", "subject": {"reference": "Patient/sc-pat"}}
    body = orjson.loads(searchset(mine))
    body["entry"] += list(extra)
    return orjson.dumps({**body, **bundle})


def _outcome(**garbled: Any) -> dict[str, Any]:
    return {"resource": {"resourceType": "OperationOutcome", **garbled}, "search": {"mode": "outcome"}}


@pytest.mark.parametrize(
    ("body", "incomplete"),
    [
        (_garbled(_outcome(issue=5)), False),
        (_garbled(_outcome(issue=[{"details": "text"}])), False),
        (_garbled(_outcome(issue="x"), {"resource": 5}, {"search": 5}, 7), False),
        (_garbled(link=5), True),
        (_garbled(link=[{"relation": "next", "url": "http://[::1"}], total="many"), True),
    ],
    ids=["issue-int", "details-text", "odd-entries", "link-int", "bad-next-link"],
)
async def test_a_garbled_answer_is_reported_and_the_pull_goes_on(
    world: World, body: bytes, incomplete: bool
) -> None:
    """What the member sent that can be read is used, the rest dropped; an answer that may miss a page
    says so. Never a 500: the other members' data comes back."""
    world.scripted.handler = answer(body)
    async with announced(world, world.scripted_ura, "sc-pat"):
        pulled = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
        everything = await world.pharmacy.get(
            f"/fhir/Patient/{world.patient}/$everything", params={"_count": "500"}
        )
    for response in (pulled, everything):
        assert response.status_code == 200, response.text
        bundle = response.json()
        ids = {r["id"] for r in entries(bundle)}
        assert expected(world, "Condition") | {"sc-1"} <= ids, issues(bundle)
        warnings = [i for i in issues(bundle) if "Scripted" in i]
        assert len(warnings) == incomplete and all("answered only in part" in w for w in warnings)


async def test_a_member_that_is_down(world: World) -> None:
    async with announced(world, world.down_ura, "down-pat"):
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
    bundle = response.json()
    assert {r["id"] for r in entries(bundle)} == expected(world, "Condition")
    assert len(issues(bundle)) == 1 and "Down" in issues(bundle)[0]


async def test_a_call_the_breaker_refused_leaves_the_members_pace_as_it_was(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It never left the gateway: counted as a quick answer, a member that kept timing out would be
    asked last once its breaker let a call through again."""
    pace = MemberPace()
    pace.note(world.down_ura, 500.0)
    monkeypatch.setattr(world.exchange, "pace", pace)
    breaker = world.exchange.breakers.for_member(world.down_ura)
    while breaker.allow():
        breaker.record_failure()
    async with announced(world, world.down_ura, "down-pat"):
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
    assert response.status_code == 200
    assert len(issues(response.json())) == 1 and "Down" in issues(response.json())[0]
    assert pace.expected_ms(world.down_ura) == 500.0
    assert pace.expected_ms(world.gp.ura) is not None  # the members that were asked count


async def test_when_every_source_fails_the_answer_is_503_or_504(world: World) -> None:
    world.scripted.handler = answer(b"{}", status=500)
    response = await world.pharmacy.get("/fhir/Condition", params={"patient": world.lonely})
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    world.exchange.breakers._breakers.clear()
    world.scripted.handler = slow(3 * SCRIPTED_DEADLINE, searchset())
    response = await world.pharmacy.get("/fhir/Condition", params={"patient": world.lonely})
    assert response.status_code == 504
    assert response.json()["issue"][0]["code"] == "timeout"


async def test_another_patients_data_is_dropped(world: World) -> None:
    mine = {"resourceType": "Condition", "id": "sc-1", "subject": {"reference": "Patient/sc-pat"}}
    theirs = {"resourceType": "Condition", "id": "sc-2", "subject": {"reference": "Patient/someone-else"}}
    world.scripted.handler = answer(searchset(mine, theirs))
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
    bundle = response.json()
    ids = {r["id"] for r in entries(bundle)}
    assert "sc-1" in ids and "sc-2" not in ids
    assert issues(bundle) == []


async def test_a_categorised_allergy_comes_back_and_what_is_dropped_is_in_the_audit_record(
    world: World,
) -> None:
    """AllergyIntolerance.category is a code (`["food"]`): passed on (a trial found every categorised
    allergy withheld). What is dropped, another patient's entry or one whose codes cannot be read, the
    requester does not see, and the audit record counts per reason for the administrators."""
    mine = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/sc-pat"}}
    food = {**mine, "id": "sc-a1", "category": ["food"], "type": "allergy", "criticality": "low"}
    unreadable = {**mine, "id": "sc-a2", "code": "91936005"}  # a code where R4 has a CodeableConcept
    theirs = {**mine, "id": "sc-a3", "patient": {"reference": "Patient/someone-else"}}
    world.scripted.handler = answer(searchset(food, unreadable, theirs))
    start = max((row.seq for row in await _audit_rows(world)), default=0)
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(
            "/fhir/AllergyIntolerance", params={"patient": world.patient, "_count": "500"}
        )
    assert response.status_code == 200, response.text
    assert [r["id"] for r in entries(response.json())] == ["sc-a1"]
    assert issues(response.json()) == []
    (record,) = [
        orjson.loads(r.content)
        for r in await _audit_rows(world, after=start)
        if "AllergyIntolerance" in r.content
    ]
    assert record["outcomeDesc"] == (
        f"source {world.scripted_ura} entries dropped: other-patient 1, unreadable-codes 1"
    )


async def test_a_search_parameter_the_member_ignores_is_enforced(world: World) -> None:
    def observation(oid: str, code: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/sc-pat"},
        }

    world.scripted.handler = answer(searchset(observation("sc-a", "2708-6"), observation("sc-b", "8867-4")))
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(
            "/fhir/Observation", params={"patient": world.patient, "code": "http://loinc.org|2708-6"}
        )
    ids = {r["id"] for r in entries(response.json())}
    assert "sc-a" in ids and "sc-b" not in ids
    assert "code=http" in world.scripted.hits[0].query  # it was asked, and ignored it


async def test_the_search_parameters_a_pull_documents_are_the_ones_it_takes(world: World) -> None:
    """An integrator finds `category` or `date` of a pulled type in the CapabilityStatement and the OpenAPI
    document, and a strict pull with it is sent on to the members, not refused as unknown."""
    statement = (await world.pharmacy.get("/fhir/metadata")).json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    listed = {p["name"]: p for p in observation["searchParam"]}
    assert {"patient", "patient.identifier", "category", "code", "date", "status"} <= set(listed)
    assert listed["date"]["type"] == "date" and listed["date"]["definition"].startswith("http://hl7.org/")
    assert not {"_include", "_revinclude", "_count", "_sort"} & set(listed)  # the gateway's, or refused
    document = orjson.loads(OPENAPI_FILE.read_bytes())  # the app's own (tests/api/test_operations.py)
    in_openapi = {p["name"] for p in document["paths"]["/fhir/Observation"]["get"]["parameters"]}
    assert set(listed) <= in_openapi

    values = {
        "category": "laboratory",
        "code": "http://loinc.org|2708-6",
        "date": "ge2024-01-01",
        "status": "final",
    }
    world.scripted.handler = answer(searchset())
    async with announced(world, world.scripted_ura, "sc-pat"):
        for name, value in values.items():
            response = await world.pharmacy.get(
                "/fhir/Observation",
                params={"patient": world.patient, name: value},
                headers={"Prefer": "handling=strict"},
            )
            assert response.status_code == 200, (name, response.text)
            assert f"{name}=" in world.scripted.hits[-1].query


async def test_a_pulled_type_answers_every_other_interaction_with_the_way_to_pull_it(world: World) -> None:
    """POST _search, a read by id or a write of a pulled type said "does not serve resource type", and a
    user took the type for unsupported: it is a 405 naming the pull."""
    for method, path in (
        ("POST", "/fhir/Condition/_search"),
        ("GET", "/fhir/Condition/some-id"),
        ("GET", "/fhir/Condition/_history"),
    ):
        response = await world.pharmacy.request(method, path, data={"patient": world.patient})
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == ""  # nothing at these addresses: the pull is the type's GET
        assert "GET /fhir/Condition?patient=" in response.json()["issue"][0]["diagnostics"]
    created = await world.pharmacy.post(
        "/fhir/Condition",
        json={"resourceType": "Condition"},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 405 and created.headers["allow"] == "GET", created.text
    unknown = await world.pharmacy.post("/fhir/NoSuchType/_search", data={"patient": world.patient})
    assert unknown.status_code == 404


async def test_a_malformed_search_value_is_the_requesters_400_and_no_member_is_asked(world: World) -> None:
    # Passed on, each member refused it, and the requester heard "no member could be asked" (503).
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "recorded-date": "ge2024-13-45"}
        )
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "recorded-date" in outcome["issue"][0]["diagnostics"]
    assert world.scripted.hits == []


async def test_an_unknown_parameter_is_refused_when_strict_else_named_and_not_sent_on(world: World) -> None:
    params = {"patient": world.patient, "clinical-status": "active", "foo": "bar", "_count": "500"}
    async with announced(world, world.scripted_ura, "sc-pat"):
        strict = await world.pharmacy.get(
            "/fhir/Condition", params=params, headers={"Prefer": "handling=strict"}
        )
        assert strict.status_code == 400, strict.text
        assert "foo" in strict.json()["issue"][0]["diagnostics"]
        assert world.scripted.hits == []

        lenient = await world.pharmacy.get("/fhir/Condition", params=params)
    assert lenient.status_code == 200, lenient.text
    assert issues(lenient.json()) == [
        "Parameter 'foo' is not supported on a pull from the region and was ignored"
    ]
    (hit,) = world.scripted.hits
    assert "clinical-status=active" in hit.query and "foo" not in hit.query  # the known one still goes
    without = await world.pharmacy.get(
        "/fhir/Condition", params={k: v for k, v in params.items() if k != "foo"}
    )
    assert {r["id"] for r in entries(lenient.json())} == {r["id"] for r in entries(without.json())}


async def test_what_a_merged_answer_cannot_do_is_said_and_what_it_can_is_done(world: World) -> None:
    base = {"patient": world.patient, "_count": "500"}
    # Sorted by the gateway across members (each member could only sort its own part), as the store sorts.
    for sort, newest_first in (("-recorded-date", True), ("recorded-date", False)):
        response = await world.pharmacy.get("/fhir/Condition", params={**base, "_sort": sort})
        found = entries(response.json())
        assert {r["id"] for r in found} == expected(world, "Condition")
        assert {source_of(r) for r in found} == {world.gp.ura, world.hospital.ura}  # both members, merged
        dated = [datetime.fromisoformat(r["recordedDate"]) for r in found if "recordedDate" in r]
        assert dated == sorted(dated, reverse=newest_first)
        assert all("recordedDate" in r for r in found[: len(dated)])  # the undated ones last
    # Not possible on a merged answer: refused when strict, else named and ignored.
    strict = await world.pharmacy.get(
        "/fhir/Condition",
        params={**base, "_include": "Condition:subject"},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 400, strict.text
    assert "_include" in strict.json()["issue"][0]["diagnostics"]
    lenient = (
        await world.pharmacy.get("/fhir/Condition", params={**base, "_include": "Condition:subject"})
    ).json()
    assert issues(lenient) == [
        "Parameter '_include' is not supported on a pull from the region and was ignored"
    ]
    # A merged answer always counts exactly: `_total` is honoured, not named as ignored.
    counted = await world.pharmacy.get(
        "/fhir/Condition", params={**base, "_total": "accurate"}, headers={"Prefer": "handling=strict"}
    )
    assert counted.status_code == 200 and issues(counted.json()) == [], counted.text
    assert counted.json()["total"] == len(expected(world, "Condition"))
    unsortable = await world.pharmacy.get(
        "/fhir/Condition", params={**base, "_sort": "nonsense"}, headers={"Prefer": "handling=strict"}
    )
    assert unsortable.status_code == 400, unsortable.text
    # _elements is applied to every entry by the gateway (and the entry marked as a subset).
    shaped = (await world.pharmacy.get("/fhir/Condition", params={**base, "_elements": "code"})).json()
    found = entries(shaped)
    assert {r["id"] for r in found} == expected(world, "Condition")
    for resource in found:
        assert set(resource) <= {"resourceType", "id", "meta", "code"}, resource
        assert any(t.get("code") == "SUBSETTED" for t in resource["meta"]["tag"])
        assert source_of(resource) in (world.gp.ura, world.hospital.ura)  # the source tag stays
    # $everything says what it does not take.
    everything = await world.pharmacy.get(
        f"/fhir/Patient/{world.patient}/$everything",
        params={"start": "2020-01-01", "_count": "500"},
        headers={"Prefer": "handling=strict"},
    )
    assert everything.status_code == 400, everything.text
    everything = (
        await world.pharmacy.get(f"/fhir/Patient/{world.patient}/$everything", params={"start": "2020-01-01"})
    ).json()
    assert issues(everything) == ["Parameter 'start' is not supported by $everything and was ignored"]


async def test_what_r4_defines_goes_to_the_members_even_where_the_gateway_could_not_evaluate_it(
    world: World,
) -> None:
    # A subsumption, a chain and a composite: the members search (and may support them); an unknown
    # name does not go; too many sort keys are refused before anyone is asked.
    params = {
        "patient": world.patient,
        "code:below": "http://snomed.info/sct|404684003",
        "encounter.date": "ge2024",
        "_has:Observation:focus:code": "http://loinc.org|8867-4",
        "foo": "bar",
    }
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get("/fhir/Condition", params=params)
        assert response.status_code == 200, response.text
        (hit,) = world.scripted.hits
        assert "code%3Abelow=" in hit.query or "code:below=" in hit.query
        assert "encounter.date=ge2024" in hit.query and "foo" not in hit.query
        assert any(name == "_has:Observation:focus:code" for name, _ in parse_qsl(hit.query))
        world.scripted.hits.clear()
        many = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_sort": ",".join(["recorded-date"] * 9)}
        )
        assert many.status_code == 400, many.text
        assert "sort keys" in many.json()["issue"][0]["diagnostics"]
        assert world.scripted.hits == []


async def test_shaping_a_members_resource_with_odd_tags_does_not_fail_the_pull(world: World) -> None:
    odd = {
        "resourceType": "Condition",
        "id": "sc-odd",
        "meta": {"tag": ["not a Coding"]},
        "code": {"text": "x"},
        "subject": {"reference": "Patient/sc-pat"},
    }
    other = {**odd, "id": "sc-null", "meta": {"tag": None}, "code": {"text": "y"}}
    world.scripted.handler = answer(searchset(odd, other))
    async with announced(world, world.scripted_ura, "sc-pat"):
        for shaping in ({"_elements": "code"}, {"_summary": "true"}, {"_summary": "data"}):
            response = await world.pharmacy.get(
                "/fhir/Condition", params={"patient": world.patient, "_count": "500", **shaping}
            )
            assert response.status_code == 200, (shaping, response.text)
            shaped = {r["id"]: r for r in entries(response.json()) if r["id"].startswith("sc-")}
            assert set(shaped) == {"sc-odd", "sc-null"}
            for resource in shaped.values():
                tags = resource["meta"]["tag"]
                assert any(isinstance(t, dict) and t.get("code") == "SUBSETTED" for t in tags)


async def test_a_failing_member_moved_to_a_working_server_is_asked_there_at_once(world: World) -> None:
    """An integrator's walkthrough: the member's breaker, opened by its old address, kept the new one
    from being called for 30 s, and the 503 did not say when to try again."""
    old = (await world.region.members([world.scripted_ura]))[world.scripted_ura]
    world.scripted.handler = answer(b"{}", status=500)
    params = {"patient": world.lonely}
    for _ in range(2):
        await world.pharmacy.get("/fhir/Condition", params=params)
    assert world.exchange.breakers.for_member(world.scripted_ura).state is BreakerState.OPEN
    refused = await world.pharmacy.get("/fhir/Condition", params=params)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"  # the breaker's cool-down, on the test's frozen clock
    moved = ScriptedMember(handler=answer(searchset()))
    try:
        with serve(moved) as moved_url:
            await world.region.update_member(world.scripted_ura, MemberChange(endpoint=f"{moved_url}/fhir"))
            response = await world.pharmacy.get("/fhir/Condition", params=params)
            assert response.status_code == 200, response.text
            assert len(moved.hits) == 1 and "retry-after" not in response.headers
    finally:
        await world.region.update_member(world.scripted_ura, MemberChange(endpoint=old.base_url))


async def test_an_entry_whose_codes_cannot_be_read_is_withheld(world: World) -> None:
    def condition(cid: str, coding: Any) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": cid,
            "code": {"coding": coding},
            "subject": {"reference": "Patient/sc-pat"},
        }

    fine = condition("sc-fine", [{"system": "http://snomed.info/sct", "code": "444814009"}])
    broken = condition("sc-broken", {"system": "http://snomed.info/sct", "code": "444814009"})
    world.scripted.handler = answer(searchset(fine, broken))
    async with announced(world, world.scripted_ura, "sc-pat"):
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
    assert response.status_code == 200, response.text
    ids = {r["id"] for r in entries(response.json())}
    assert "sc-fine" in ids and "sc-broken" not in ids


async def test_what_a_resource_contains_is_decided_too_and_a_label_in_any_spelling(world: World) -> None:
    """A prescription carrying the patient's psychiatric diagnosis as a contained Condition, and labels
    written under the ActCode OID or another code system: each is the PSY data the pharmacy's consent
    (everything, but no sensitive label) does not cover (a security test got both through)."""

    def labelled(cid: str, system: str) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": cid,
            "meta": {"security": [{"system": system, "code": "PSY"}]},
            "subject": {"reference": "Patient/sc-pat"},
        }

    def prescription(rid: str, *contained: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": rid,
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/sc-pat"},
            "medicationReference": {"reference": "#med"},
            "contained": list(contained),
        }

    medication = {"resourceType": "Medication", "id": "med", "code": {"text": "lithium"}}
    prescriber = {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Jansen"}]}
    diagnosis = labelled("dx", PSY["system"])
    answers = {
        "MedicationRequest": searchset(
            prescription("mr-plain", medication, prescriber), prescription("mr-psy", medication, diagnosis)
        ),
        "Condition": searchset(
            labelled("c-oid", "urn:oid:2.16.840.1.113883.5.4"),
            labelled("c-old", "http://hl7.org/fhir/v3/ActCode"),
            labelled("c-other", "http://ehr.example.org/labels"),
            {"resourceType": "Condition", "id": "c-plain", "subject": {"reference": "Patient/sc-pat"}},
        ),
    }

    async def by_type(request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, answers[request["hit"].path.rsplit("/", 1)[1]]

    world.scripted.handler = by_type
    async with announced(world, world.scripted_ura, "sc-pat"):
        got = set()
        for res_type in answers:
            response = await world.pharmacy.get(
                f"/fhir/{res_type}", params={"patient": world.patient, "_count": "500"}
            )  # one page: the GP's and the hospital's entries come too
            assert response.status_code == 200, response.text
            assert issues(response.json()) == [], response.text  # every member answered in time
            got |= {r["id"] for r in entries(response.json()) if r["id"].startswith(("mr-", "c-"))}
    assert got == {"mr-plain", "c-plain"}


async def test_the_circuit_breaker_opens_and_closes(world: World) -> None:
    world.scripted.handler = answer(b"{}", status=500)
    async with announced(world, world.scripted_ura, "sc-pat"):
        for _ in range(2):
            await world.pharmacy.get("/fhir/Condition", params={"patient": world.patient, "_count": "500"})
        assert len(world.scripted.hits) == 2
        assert world.exchange.breakers.for_member(world.scripted_ura).state is BreakerState.OPEN
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
        assert len(world.scripted.hits) == 2  # not asked while open
        assert len(issues(response.json())) == 1
        world.clock.now += 31
        world.scripted.handler = answer(searchset())
        response = await world.pharmacy.get(
            "/fhir/Condition", params={"patient": world.patient, "_count": "500"}
        )
        assert len(world.scripted.hits) == 3  # the trial call
        assert issues(response.json()) == []
        assert world.exchange.breakers.for_member(world.scripted_ura).state is BreakerState.CLOSED
