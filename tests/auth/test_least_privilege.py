"""What each kind of caller may not do, found by a security test of the running region: a member system
reaching consents through `_revinclude`, writing the region's registry, listing its patients, or pulling
as the wrong role; an admin system reading the trail; a logged-out person still using the console; a
revoked client introspecting tokens. Each refusal is a 4xx OperationOutcome (or an OAuth error at /auth)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from rzcp.auth import registry
from rzcp.auth.bsn import BSN_SYSTEM as BSN_SYSTEM_URL
from rzcp.consent.cases import consent_from_compact
from rzcp.consent.policy import load_policy
from rzcp.store.resources import ResourceStore
from tests.auth.test_resource_access import CONTEXT, assert_outcome
from tests.conftest import FHIR, fetch_token, gateway_client, register_system

MEMBER_SCOPE = "system/*.rs system/Patient.c system/Bundle.c"


async def _token(app: Any, *, role: str = "member", scope: str = MEMBER_SCOPE) -> str:
    system = await register_system(app, scope=scope, role=role)
    async with gateway_client(app) as http:
        return await fetch_token(http, system, scope)


def _as(app: Any, token: str, **headers: str) -> httpx.AsyncClient:
    return gateway_client(app, **{**CONTEXT, **headers}, Authorization=f"Bearer {token}")


async def _stored_patient_with_consent(app: Any) -> tuple[str, str, str]:
    """A regional Patient, a Consent of theirs, and a Provenance that points at both (ids)."""
    runtime = app.state.runtime
    patient, consent_id, provenance = (f"lp-{uuid.uuid4().hex[:10]}" for _ in range(3))
    consent = consent_from_compact(
        {"id": consent_id, "deny": {"to": "ggz"}}, load_policy(), patient=f"Patient/{patient}"
    )
    consent.pop("meta", None)
    async with runtime.db.write() as conn:
        store = ResourceStore(conn, runtime.registry)
        await store.create({"resourceType": "Patient", "active": True}, res_id=patient)
        await store.create(consent, res_id=consent_id)
        await store.create(
            {
                "resourceType": "Provenance",
                "target": [{"reference": f"Consent/{consent_id}"}, {"reference": f"Patient/{patient}"}],
                "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"who": {"display": "test"}}],
            },
            res_id=provenance,
        )
    return patient, consent_id, provenance


async def test_a_member_reaches_no_consent_through_an_include(app: Any) -> None:
    patient, consent_id, provenance = await _stored_patient_with_consent(app)
    async with _as(app, await _token(app)) as http:
        for include in ("_revinclude=Consent:patient", "_include=Provenance:target:Consent"):
            path = (
                f"/fhir/Patient?_id={patient}&{include}"
                if "rev" in include
                else (f"/fhir/Provenance?_id={provenance}&{include}")
            )
            refused = await http.get(path)
            assert_outcome(refused, 403, "forbidden")
            assert consent_id not in refused.text
        # an _include that may reach any type: what the member may not search is left out, unannounced
        found = await http.get(f"/fhir/Provenance?_id={provenance}&_include=Provenance:target")
        assert found.status_code == 200, found.text
        included = [e["resource"] for e in found.json()["entry"] if e["search"]["mode"] == "include"]
        assert [(r["resourceType"], r["id"]) for r in included] == [("Patient", patient)]
    async with _as(app, await _token(app, role="admin", scope="system/*.cruds")) as http:
        admin = await http.get(f"/fhir/Patient?_id={patient}&_revinclude=Consent:patient")
        assert admin.status_code == 200 and consent_id in admin.text  # the region's administrators may


async def test_a_member_writes_nothing_of_the_registry_and_changes_nothing(app: Any) -> None:
    runtime = app.state.runtime
    org_id = f"ura-lp-{uuid.uuid4().hex[:8]}"
    organization = {"resourceType": "Organization", "name": "Huisartsenpraktijk Echt"}
    async with runtime.db.write() as conn:
        await ResourceStore(conn, runtime.registry).create(organization, res_id=org_id)
    token = await _token(app, scope="system/*.cruds")
    async with _as(app, token) as http:
        before = (await http.get(f"/fhir/Organization/{org_id}")).json()
        imposter = {
            "resourceType": "Patient",
            "identifier": [{"system": BSN_SYSTEM_URL, "value": "999990020"}],
            "name": [{"family": "Imposter"}],
        }
        hijacked = {"resourceType": "Organization", "id": org_id, "name": "Hijacked"}
        evil = {"resourceType": "Endpoint", "status": "active", "address": "http://evil.example/fhir"}
        for attempt in (
            http.post("/fhir/Patient", json=imposter, headers={"Content-Type": FHIR}),
            http.put(f"/fhir/Organization/{org_id}", json=hijacked, headers={"Content-Type": FHIR}),
            http.delete(f"/fhir/Organization/{org_id}"),
            http.post("/fhir/Endpoint", json=evil, headers={"Content-Type": FHIR}),
        ):
            assert_outcome(await attempt, 403, "forbidden")
        assert (await http.get(f"/fhir/Organization/{org_id}")).json() == before
    async with _as(app, await _token(app, role="admin", scope="system/*.cruds")) as http:
        imposters = await http.get("/fhir/Patient", params={"family": "Imposter"})
        assert imposters.status_code == 200 and not imposters.json().get("entry")


async def test_a_member_finds_one_patient_and_lists_none(app: Any) -> None:
    runtime = app.state.runtime
    patient = f"lp-{uuid.uuid4().hex[:10]}"
    async with runtime.db.write() as conn:
        await ResourceStore(conn, runtime.registry).create({"resourceType": "Patient"}, res_id=patient)
    async with _as(app, await _token(app)) as http:
        for params in ({}, {"name": "x"}, {"birthdate": "ge1900"}, {"identifier": f"{BSN_SYSTEM_URL}|"},
                       {"identifier:missing": "false"}, {"_id": patient, "gender": "female"},
                       {"_summary": "count"}):  # fmt: skip
            assert_outcome(await http.get("/fhir/Patient", params=params), 403, "forbidden")
        assert_outcome(await http.post("/fhir/Patient/_search", data={"name": "x"}), 403, "forbidden")
        assert_outcome(await http.get("/fhir/Patient/_history"), 403, "forbidden")
        one = await http.get("/fhir/Patient", params={"_id": patient, "_elements": "id"})
        assert one.status_code == 200 and [e["resource"]["id"] for e in one.json()["entry"]] == [patient]
        by_bsn = await http.get("/fhir/Patient", params={"identifier": f"{BSN_SYSTEM_URL}|999990019"})
        assert by_bsn.status_code == 200


async def test_the_trail_is_for_auditors_and_the_exchange_for_members(app: Any) -> None:
    admin = await _token(app, role="admin", scope="system/*.cruds")
    async with _as(app, admin) as http:
        assert_outcome(await http.get("/fhir/AuditEvent", params={"_count": "1"}), 403, "forbidden")
        # an admin system manages the region; it pulls no patient's data and sends no messages
        assert_outcome(await http.get("/fhir/Patient/anyone/$everything"), 403, "forbidden")
    auditor = await _token(app, role="auditor", scope="system/*.rs")
    async with _as(app, auditor) as http:
        assert (await http.get("/fhir/AuditEvent", params={"_count": "1"})).status_code == 200


async def test_a_push_names_the_acting_practitioner(app: Any) -> None:
    token = await _token(app)
    async with gateway_client(app, Authorization=f"Bearer {token}") as http:
        bundle = {"resourceType": "Bundle", "type": "message", "entry": []}
        refused = await http.post("/fhir/$process-message", json=bundle, headers={"Content-Type": FHIR})
        assert refused.status_code == 400, refused.text
        assert "X-Acting-Practitioner" in refused.text


async def test_the_acting_practitioner_is_named_in_ascii_digits(app: Any) -> None:
    token = await _token(app)
    # sent as bytes, which the server reads as Latin-1: superscript digits pass `str.isdigit`
    for lookalike in (
        "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|\u00b2\u00b3\u00b9",
        "http://fhir.nl/fhir/NamingSystem/big|1\u00b9",
        "urn:oid:\u00b2.16.528|emp-1",
    ):
        headers = {
            **CONTEXT,
            "X-Acting-Practitioner": lookalike.encode("latin-1"),
            "Authorization": f"Bearer {token}",
        }
        async with gateway_client(app) as http:
            refused = await http.get("/fhir/Condition", params={"patient": "x"}, headers=headers)
            assert_outcome(refused, 400, "value")


async def test_introspection_is_for_live_clients_and_their_own_tokens(app: Any) -> None:
    caller, other = await register_system(app), await register_system(app)
    async with gateway_client(app) as http:
        own = await fetch_token(http, caller)
        foreign = await fetch_token(http, other)
        http.headers["Authorization"] = f"Bearer {own}"
        answer = await http.post("/auth/introspect", data={"token": own})
        assert answer.status_code == 200 and answer.json()["active"] is True
        assert (await http.post("/auth/introspect", data={"token": foreign})).json() == {"active": False}
        async with app.state.runtime.db.write() as conn:
            await registry.revoke_client(conn, caller.client_id)
        refused = await http.post("/auth/introspect", data={"token": foreign})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


async def test_digits_that_are_not_ascii_are_a_400_not_a_500(app: Any) -> None:
    """Found by the second security test: `str.isdigit` takes a superscript two, `int` does not."""
    admin = await _token(app, role="admin", scope="system/*.cruds")
    auditor = await _token(app, role="auditor", scope="system/*.rs")
    for token, path in (
        (admin, "/fhir/Organization?_count=%C2%B2"),
        (admin, "/fhir/Organization/x/_history/%C2%B2"),
        (admin, "/fhir/Organization?_count=999967551%C2%B2"),
        (auditor, "/fhir/AuditEvent?_count=%C2%B2"),
    ):
        async with _as(app, token) as http:
            answer = await http.get(path)
            assert answer.status_code in (400, 404), (path, answer.status_code, answer.text)
            assert answer.json()["resourceType"] == "OperationOutcome"


async def test_a_persons_token_reads_no_messages_delivery(app: Any) -> None:
    """Found by a security test: an admin's token issued to another app read a delivery's Task (sender,
    receiver, patient). A message's status is for its sender and receiver and the region's admin systems."""
    from tests.admin.conftest import minted_person_token

    token = await minted_person_token(app, "dev:chief", ["admin", "auditor"], ["pwd", "otp"])
    async with gateway_client(app, Authorization=f"Bearer {token}") as http:
        assert_outcome(await http.get(f"/fhir/$process-message/{uuid.uuid4()}"), 403, "forbidden")
    admin = await _token(app, role="admin", scope="system/*.cruds")
    async with _as(app, admin) as http:
        assert (await http.get(f"/fhir/$process-message/{uuid.uuid4()}")).status_code == 404
