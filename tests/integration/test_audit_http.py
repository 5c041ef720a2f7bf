"""Every request that touches patient data or the registry leaves an AuditEvent with the NEN 7513 fields,
denied and failed ones included; no record, no response; the trail is for auditors and, their own part,
for patients."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from rzcp.app import create_app
from rzcp.audit.search import search_events
from rzcp.auth import registry
from rzcp.store.migrate import upgrade
from tests.conftest import FHIR, PRACTITIONER, fetch_token, gateway_client, make_settings, register_system
from tests.integration.conftest import as_patient, log_reader_token, new_bsn, patient_token


async def events_for(app: Any, correlation_id: str) -> list[dict[str, Any]]:
    page = await search_events(app.state.runtime.db, correlation_id=correlation_id)
    return page.events


def subtype_codes(event: dict[str, Any]) -> set[str]:
    return {c["code"] for c in event["subtype"]}


async def one_event(app: Any, response: httpx.Response) -> dict[str, Any]:
    correlation = response.headers["x-request-id"]
    events = await events_for(app, correlation)
    assert len(events) == 1, events
    return events[0]


def agent_ids(event: dict[str, Any]) -> set[str]:
    found = set()
    for agent in event["agent"]:
        who = agent.get("who", {})
        identifier = who.get("identifier", {})
        if identifier:
            found.add(f"{identifier.get('system')}|{identifier.get('value')}")
        if who.get("reference"):
            found.add(who["reference"])
    return found


async def test_a_read_is_recorded_with_who_what_why_and_for_whom(app: Any, client: httpx.AsyncClient) -> None:
    patient = (
        await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR})
    ).json()
    response = await client.get(f"/fhir/Patient/{patient['id']}")
    assert response.status_code == 200
    event = await one_event(app, response)
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert "read" in subtype_codes(event)
    assert PRACTITIONER in agent_ids(event)
    text_of_event = str(event)
    assert f"Patient/{patient['id']}" in text_of_event
    assert "TREAT" in text_of_event
    assert response.headers["x-request-id"] in text_of_event


async def test_search_records_what_was_returned(app: Any, client: httpx.AsyncClient) -> None:
    family = f"Audit{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await client.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": family}]},
            headers={"Content-Type": FHIR},
        )
    response = await client.get("/fhir/Patient", params={"family": family})
    assert len(response.json()["entry"]) == 3
    event = await one_event(app, response)
    assert event["action"] == "E"
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert family in base64.b64decode(query["query"]).decode()  # the query as asked (BALP: base64)
    returned = next(e for e in event["entity"] if e.get("description") == "returned")
    assert returned["type"]["code"] == "Patient"
    assert returned["detail"] == [{"type": "count", "valueString": "3"}]  # a count, never content
    assert family not in str({k: v for k, v in event.items() if k != "entity"})


async def test_writes_are_recorded(app: Any, client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR}
    )
    assert (await one_event(app, created))["action"] == "C"
    pid = created.json()["id"]
    updated = await client.put(
        f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers={"Content-Type": FHIR}
    )
    assert (await one_event(app, updated))["action"] == "U"
    deleted = await client.delete(f"/fhir/Patient/{pid}")
    assert (await one_event(app, deleted))["action"] == "D"


async def test_denied_and_failed_requests_are_recorded(
    app: Any, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    no_token = await anonymous.get("/fhir/Patient")
    assert no_token.status_code == 401
    assert (await one_event(app, no_token))["outcome"] == "4"
    not_found = await client.get("/fhir/Patient/does-not-exist")
    assert not_found.status_code == 404
    event = await one_event(app, not_found)
    assert event["outcome"] == "4"
    # a refusal's record says why, as the caller was told (a privacy officer found no reason recorded)
    assert event["outcomeDesc"] == not_found.json()["issue"][0]["diagnostics"]
    assert (await one_event(app, no_token))["outcomeDesc"] == no_token.json()["issue"][0]["diagnostics"]
    # what the caller is told may quote what it asked; the trail keeps no BSN of it (a review's find)
    for asked in ("999.967.551", "12345672", "999967551"):
        answer = await client.get(f"/fhir/Patient/{asked}")
        assert answer.status_code == 404
        desc = (await one_event(app, answer))["outcomeDesc"]
        assert "Patient/*" in desc and not any(ch.isdigit() for ch in desc), desc
    reader = await register_system(app, scope="system/Organization.rs", role="member")
    async with gateway_client(app) as http:
        token = await fetch_token(http, reader, scope="system/Organization.rs")
        forbidden = await http.get(
            "/fhir/Patient",
            headers={"Authorization": f"Bearer {token}", "X-Acting-Practitioner": PRACTITIONER},
        )
    assert forbidden.status_code == 403
    event = await one_event(app, forbidden)
    assert event["outcome"] == "4"
    assert reader.member_ura in str(event)
    assert event["outcomeDesc"] == forbidden.json()["issue"][0]["diagnostics"]


async def test_many_parallel_requests_leave_one_record_each_in_an_unbroken_chain(
    app: Any, client: httpx.AsyncClient
) -> None:
    import asyncio

    from rzcp.audit.verify import verify_chain

    responses = await asyncio.gather(
        *(client.get("/fhir/Organization", params={"name": f"x{n}"}) for n in range(24))
    )
    for response in responses:
        assert len(await events_for(app, response.headers["x-request-id"])) == 1
    result = await verify_chain(app.state.runtime.db, app.state.runtime.audit.signer)
    assert result.ok, result


async def test_fail_closed_when_the_trail_cannot_be_written(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'broken.db'}"))
    runtime = app.state.runtime
    await upgrade(runtime.db)
    admin = await register_system(app, scope="system/*.cruds", role="admin")
    async with gateway_client(app) as http:
        token = await fetch_token(http, admin)
        headers = {"Authorization": f"Bearer {token}", "X-Acting-Practitioner": PRACTITIONER}
        created = await http.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Geheim"}]},
            headers={**headers, "Content-Type": FHIR},
        )
        assert created.status_code == 201
        async with runtime.db.write() as conn:  # the trail's table becomes unwritable
            await conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_gone"))
        response = await http.get(f"/fhir/Patient/{created.json()['id']}", headers=headers)
        # the token endpoint's clients read OAuth errors (an integrator's walkthrough got an OperationOutcome)
        refused_token = await http.post("/auth/token", data=admin.form("system/*.rs"))
    await runtime.aclose()
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Geheim" not in response.text
    assert refused_token.status_code == 503 and refused_token.headers["retry-after"] == "5"
    assert refused_token.json()["error"] == "temporarily_unavailable"
    assert "access_token" not in refused_token.text


async def test_a_patient_reads_their_own_log_and_not_anothers(
    login_app: Any, browser: httpx.AsyncClient, client: httpx.AsyncClient, app: Any, admin_system: Any
) -> None:
    mine = await log_reader_token(browser, new_bsn())
    theirs = await patient_token(browser, new_bsn())
    my_id, their_id = mine["patient"], theirs["patient"]
    await client.get(f"/fhir/Patient/{my_id}")  # a professional looks at my record
    await client.get(f"/fhir/Patient/{their_id}")
    async with as_patient(login_app, mine["access_token"]) as me:
        log = await me.get("/fhir/AuditEvent/$access-log", params={"lang": "en"})
        assert log.status_code == 200, log.text
        accesses = [p for p in log.json()["parameter"] if p["name"] == "access"]
        assert accesses
        # every moment is a FHIR instant in UTC, and recent (it once said "...+01:00Z")
        for access in accesses:
            when = next(p["valueInstant"] for p in access["part"] if p["name"] == "when")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when), when
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            assert abs((datetime.now(UTC) - moment).total_seconds()) < 600
        texts = " ".join(part.get("valueString", "") for a in accesses for part in a["part"])
        assert their_id not in texts
        # NEN 7513: the person and the organisation, by name where the region knows it
        assert "care provider with UZI number 900012345" in texts
        assert f"at Member {admin_system.member_ura} viewed" in texts
        trail = await me.get("/fhir/AuditEvent", params={"patient": f"Patient/{their_id}"})
        assert trail.status_code == 200
        assert all(f"Patient/{my_id}" in str(e["resource"]) for e in trail.json().get("entry", []))
        reading = await one_event(app, log)
        assert f"Patient/{my_id}" in str(reading)  # reading the log is itself logged


async def test_a_person_cannot_name_someone_else_as_who_acts(
    login_app: Any, browser: httpx.AsyncClient, app: Any
) -> None:
    """X-Acting-Practitioner names the professional a member system acts for; from a patient (or a
    staff member) it would put a real practitioner in the record in their place (a security test)."""
    mine = await log_reader_token(browser, new_bsn())
    other = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|111222333"
    async with as_patient(login_app, mine["access_token"]) as me:
        refused = await me.get("/fhir/AuditEvent/$access-log", headers={"X-Acting-Practitioner": other})
        assert refused.status_code == 400, refused.text
        assert "X-Acting-Practitioner" in refused.json()["issue"][0]["diagnostics"]
        event = await one_event(app, refused)
    assert f"Patient/{mine['patient']}" in agent_ids(event)
    assert other not in agent_ids(event) and "111222333" not in str(event)


async def test_a_member_cannot_read_the_trail_and_an_auditor_can(app: Any) -> None:
    member = await register_system(app, scope="system/*.rs", role="member")
    auditor = await register_system(app, scope="system/AuditEvent.rs", role="auditor")
    async with gateway_client(app) as http:
        member_token = await fetch_token(http, member, scope="system/*.rs")
        auditor_token = await fetch_token(http, auditor, scope="system/AuditEvent.rs")
        refused = await http.get(
            "/fhir/AuditEvent",
            headers={"Authorization": f"Bearer {member_token}", "X-Acting-Practitioner": PRACTITIONER},
        )
        assert refused.status_code == 403
        allowed = await http.get(
            "/fhir/AuditEvent",
            params={"outcome": "4", "_count": "5"},
            headers={"Authorization": f"Bearer {auditor_token}", "X-Acting-Practitioner": PRACTITIONER},
        )
        assert allowed.status_code == 200, allowed.text
        bundle = allowed.json()
        assert bundle["type"] == "searchset" and bundle["total"] >= 1
        assert all(e["resource"]["outcome"] == "4" for e in bundle["entry"])
        # a value no record can hold is a 400 naming what is taken, never an empty answer read as "nothing"
        for name, value, says in (
            ("outcome", "denied", "outcome is an AuditEvent outcome code: 0, 4, 8, 12"),
            ("purpose", "TRAET", "is not a v3 PurposeOfUse code"),
            ("member", "123", "member is a URA: 8 digits"),
        ):
            mistyped = await http.get(
                "/fhir/AuditEvent",
                params={name: value},
                headers={"Authorization": f"Bearer {auditor_token}", "X-Acting-Practitioner": PRACTITIONER},
            )
            assert mistyped.status_code == 400, (name, mistyped.text)
            assert says in mistyped.json()["issue"][0]["diagnostics"]
        written = await http.post(
            "/fhir/AuditEvent",
            json={"resourceType": "AuditEvent"},
            headers={"Authorization": f"Bearer {auditor_token}", "Content-Type": FHIR},
        )
        assert written.status_code in (403, 405)
        # a revoked auditor client reads nothing more, from its next request (its token has not expired)
        async with app.state.runtime.db.write() as conn:
            await registry.revoke_client(conn, auditor.client_id)
        after = await http.get(
            "/fhir/AuditEvent",
            headers={"Authorization": f"Bearer {auditor_token}", "X-Acting-Practitioner": PRACTITIONER},
        )
        assert after.status_code == 401, after.text


async def test_a_hostile_id_is_answered_and_recorded_without_failing_the_batch(
    client: httpx.AsyncClient,
) -> None:
    """A path id far longer than any column (found by schemathesis on PostgreSQL: the record's write failed,
    and with it the 503 of every request in the same group commit)."""
    hostile = "x" * 5000
    answers = await asyncio.gather(
        client.get(f"/fhir/Patient/{hostile}/_history/1"),
        client.get(f"/fhir/Patient/{hostile}"),
        client.get("/fhir/metadata"),
    )
    assert [a.status_code for a in answers[:2]] in ([404, 404], [400, 400], [400, 404], [404, 400])
    assert all(a.json()["resourceType"] == "OperationOutcome" for a in answers[:2])
    assert answers[2].status_code == 200


async def test_a_token_grant_is_recorded_with_the_client_and_member_it_went_to(app: Any) -> None:
    """The token's later requests carry its id: the grant's record ties them to the client and member."""
    system = await register_system(app, scope="system/*.rs")
    async with gateway_client(app) as http:
        granted = await http.post("/auth/token", data=system.form("system/*.rs"))
        refused = await http.post("/auth/token", data={**system.form("system/*.rs"), "scope": "user/*.rs"})
    assert granted.status_code == 200 and refused.status_code == 400
    event = await one_event(app, granted)
    assert f"https://rzcp.nl/fhir/NamingSystem/client-id|{system.client_id}" in agent_ids(event)
    assert f"http://fhir.nl/fhir/NamingSystem/ura|{system.member_ura}" in agent_ids(event)
    client = next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == "110153")
    assert client.get("altId")  # the token's id, as in the records of its requests
    failed = await one_event(app, refused)
    assert all(system.client_id not in i for i in agent_ids(failed))  # a failed grant names no one
