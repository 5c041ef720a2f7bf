"""The FHIR REST adapter against a simulated member: the foundation's FHIR server on its own database (SQLite
and PostgreSQL, from the `database_url` fixture), loaded with a Synthea patient and nl-core examples, served
by uvicorn on a loopback port, behind a static bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from rzcp.exchange.adapters import (
    AuthKind,
    DeliveryStatus,
    Member,
    MemberAdapter,
    MemberAuth,
    ProblemCode,
    ReadStatus,
    SearchQuery,
)
from rzcp.exchange.limits import ResponseLimits
from rzcp.membersim.bsn import BSN_SYSTEM, is_valid_bsn
from rzcp.membersim.loader import LoadReport, load_member_data
from rzcp.membersim.server import create_member_app
from tests.conftest import SHARED_DATA
from tests.exchange.servers import serve

SYNTHEA = SHARED_DATA / "synthea" / "uscore_bundle_patient_85.json"
NL_CORE = [
    SHARED_DATA / "nl-core" / "nl-core-Patient-01.json",
    SHARED_DATA / "nl-core" / "nl-core-AllergyIntolerance-01.json",
]
PREFIX = "ms-"
TOKEN = "member-sim-token"


def synthea_entries() -> list[dict[str, Any]]:
    return orjson.loads(SYNTHEA.read_bytes())["entry"]


def synthea_patient() -> str:
    entry = next(e for e in synthea_entries() if e["resource"]["resourceType"] == "Patient")
    return entry["fullUrl"].removeprefix("urn:uuid:")


def expected(res_type: str, element: str, code: str | None = None) -> set[str]:
    """Ids (as loaded) of the file's resources of a type about its patient, computed from the raw JSON."""
    patient_urn = f"urn:uuid:{synthea_patient()}"
    out = set()
    for entry in synthea_entries():
        resource = entry["resource"]
        if resource["resourceType"] != res_type or resource.get(element, {}).get("reference") != patient_urn:
            continue
        if code is not None and code not in {c["code"] for c in resource["code"]["coding"]}:
            continue
        out.add(PREFIX + entry["fullUrl"].removeprefix("urn:uuid:"))
    return out


@pytest.fixture
def limits() -> ResponseLimits:
    """The production defaults (the module conftest's are small, for the misbehaviour tests)."""
    return ResponseLimits()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def member_sim(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Member, LoadReport]]:
    # A member organisation keeps its own database; on SQLite that is a file of its own.
    if database_url.startswith("sqlite"):
        database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('member') / 'member.db'}"
    report = await load_member_data(database_url, [SYNTHEA, *NL_CORE], id_prefix=PREFIX)
    app = create_member_app(
        name="Huisartsenpraktijk Test", ura="90000001", database_url=database_url, token=TOKEN
    )
    with serve(app) as base:
        member = Member(
            "90000001",
            "Huisartsenpraktijk Test",
            "Z3",
            f"{base}/fhir",
            timeout=10.0,
            auth=MemberAuth(AuthKind.BEARER, token=TOKEN),
        )
        yield member, report


async def test_the_loader_kept_ids_and_gave_valid_bsns(member_sim: tuple[Member, LoadReport]) -> None:
    _member, report = member_sim
    patient = PREFIX + synthea_patient()
    assert set(report.patients) == {patient, PREFIX + "nl-core-Patient-01"}
    assert all(is_valid_bsn(bsn) for bsn in report.patients.values())
    assert report.patients[PREFIX + "nl-core-Patient-01"] == "111222333"  # its own, valid BSN is kept


async def test_search_returns_exactly_the_patients_resources(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport]
) -> None:
    member, _ = member_sim
    patient = PREFIX + synthea_patient()
    outcome = await adapter.search(member, SearchQuery("Observation", patient, [("_count", "25")]))
    assert not outcome.failed and not outcome.partial and outcome.problems == []
    assert {r["id"] for r in outcome.resources} == expected("Observation", "subject")
    assert len(outcome.resources) > 25  # more than one page was followed
    outcome = await adapter.search(member, SearchQuery("Immunization", patient))
    assert {r["id"] for r in outcome.resources} == expected("Immunization", "patient")
    outcome = await adapter.search(
        member, SearchQuery("Observation", patient, [("code", "http://loinc.org|2708-6")])
    )
    assert {r["id"] for r in outcome.resources} == expected("Observation", "subject", "2708-6")
    # References were rewritten from urn:uuid to Type/id.
    assert all(r["subject"]["reference"] == f"Patient/{patient}" for r in outcome.resources)


@pytest.mark.parametrize("limits", [ResponseLimits(max_pages=2)])
async def test_a_search_asks_for_pages_as_large_as_the_member_allows(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport], limits: ResponseLimits
) -> None:
    """At the member's default page size (20) two pages held 40 of the patient's 66 Observations and the
    rest was cut off; the adapter asks for `_count=max_entries` and the member's own maximum decides."""
    member, _ = member_sim
    patient = PREFIX + synthea_patient()
    outcome = await adapter.search(member, SearchQuery("Observation", patient))
    assert not outcome.partial and outcome.problems == []
    assert {r["id"] for r in outcome.resources} == expected("Observation", "subject")
    assert len(outcome.resources) > 2 * 20


async def test_nl_core_data_is_found_by_its_patient(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport]
) -> None:
    member, _ = member_sim
    outcome = await adapter.search(member, SearchQuery("AllergyIntolerance", PREFIX + "nl-core-Patient-01"))
    assert [r["id"] for r in outcome.resources] == [PREFIX + "nl-core-AllergyIntolerance-01"]


async def test_read_and_a_read_for_another_patient(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport]
) -> None:
    member, report = member_sim
    patient = PREFIX + synthea_patient()
    read = await adapter.read(member, "Patient", patient)
    assert read.status is ReadStatus.FOUND
    assert read.resource is not None
    assert read.resource["identifier"][0] == {"system": BSN_SYSTEM, "value": report.patients[patient]}
    one = sorted(expected("Observation", "subject"))[0]
    assert (await adapter.read(member, "Observation", one, patient=patient)).status is ReadStatus.FOUND
    other = await adapter.read(member, "Observation", one, patient=PREFIX + "nl-core-Patient-01")
    assert other.status is ReadStatus.NOT_FOUND and other.resource is None
    missing = await adapter.read(member, "Observation", "no-such-id")
    assert missing.status is ReadStatus.NOT_FOUND and missing.problems == []


async def test_capabilities_of_a_member_sim(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport]
) -> None:
    member, _ = member_sim
    found = await adapter.capabilities(member)
    assert found.available and found.fhir_version == "4.0.1"
    assert {"Observation", "Patient", "Immunization"} <= set(found.resource_types)


async def test_the_static_bearer_token_is_required(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport]
) -> None:
    member, _ = member_sim
    anonymous = Member(member.ura, member.name, member.category, member.base_url)
    outcome = await adapter.search(anonymous, SearchQuery("Observation", PREFIX + synthea_patient()))
    assert outcome.failed and [p.code for p in outcome.problems] == [ProblemCode.AUTH_FAILED]
    async with httpx.AsyncClient() as http:  # metadata stays open, as on most FHIR servers
        assert (await http.get(f"{member.base_url}/metadata")).status_code == 200


async def test_a_message_is_processed_once_per_idempotency_key(
    adapter: MemberAdapter, member_sim: tuple[Member, LoadReport], tmp_path: Path
) -> None:
    member, _ = member_sim
    message = {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {"system": "urn:rzcp:events", "code": "discharge-letter"},
                    "source": {"endpoint": "urn:rzcp:member:90000002"},
                }
            }
        ],
    }
    key = f"msg-{tmp_path.name[-20:]}".replace("_", "-")
    first = await adapter.deliver(member, message, idempotency_key=key)
    again = await adapter.deliver(member, message, idempotency_key=key)
    assert first.status is again.status is DeliveryStatus.DELIVERED
    assert "already processed" not in orjson.dumps(first.answer).decode()
    assert "already processed" in orjson.dumps(again.answer).decode()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        stored = (await http.get(f"{member.base_url}/Bundle", params={"_id": key})).json()
    assert [e["resource"]["id"] for e in stored.get("entry", [])] == [key]
    refused = await adapter.deliver(
        member, {"resourceType": "Bundle", "type": "collection"}, idempotency_key="x-1"
    )
    assert refused.status is DeliveryStatus.REJECTED and refused.http_status == 400
