"""Consents through the FHIR API: the patient writes them, the next decision follows, nobody else's
consents can be written, members never read them, and invalid ones are refused with the reason."""

from __future__ import annotations

from typing import Any

import httpx

from rzcp.consent.cases import consent_from_compact
from tests.conftest import FHIR, fetch_token, gateway_client, register_system
from tests.integration.conftest import as_patient, new_bsn, patient_token

HOSPITAL_CATEGORY = "ziekenhuizen-labs"


def consent_body(app: Any, compact: dict[str, Any]) -> dict[str, Any]:
    body = consent_from_compact({"id": "draft", **compact}, app.state.runtime.policy)
    body.pop("id", None)
    body.pop("meta", None)
    return body


def evaluate_body(**values: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, "valueString": value} for name, value in values.items()],
    }


async def decision(http: httpx.AsyncClient, **values: str) -> str:
    response = await http.post(
        "/fhir/Consent/$evaluate", json=evaluate_body(**values), headers={"Content-Type": FHIR}
    )
    assert response.status_code == 200, response.text
    return next(p["valueCode"] for p in response.json()["parameter"] if p["name"] == "decision")


async def test_patient_writes_changes_and_revokes_and_the_next_decision_follows(
    login_app: Any, browser: httpx.AsyncClient
) -> None:
    token = (await patient_token(browser, new_bsn()))["access_token"]
    question = {
        "requesterCategory": HOSPITAL_CATEGORY,
        "sourceCategory": "huisartsen",
        "resourceType": "AllergyIntolerance",
    }
    async with as_patient(login_app, token) as patient:
        assert await decision(patient, **question) == "deny"  # opt-in: nothing without a consent
        created = await patient.post(
            "/fhir/Consent",
            json=consent_body(login_app, {"permit": {"to": HOSPITAL_CATEGORY}}),
            headers={"Content-Type": FHIR},
        )
        assert created.status_code == 201, created.text
        consent = created.json()
        assert await decision(patient, **question) == "permit"
        consent["status"] = "inactive"
        changed = await patient.put(
            f"/fhir/Consent/{consent['id']}", json=consent, headers={"Content-Type": FHIR}
        )
        assert changed.status_code == 200, changed.text
        assert await decision(patient, **question) == "deny"
        consent["status"] = "active"
        consent["meta"] = changed.json()["meta"]
        again = await patient.put(
            f"/fhir/Consent/{consent['id']}", json=consent, headers={"Content-Type": FHIR}
        )
        assert again.status_code == 200
        assert await decision(patient, **question) == "permit"
        assert (await patient.delete(f"/fhir/Consent/{consent['id']}")).status_code == 204
        assert await decision(patient, **question) == "deny"


async def test_a_patient_cannot_write_a_consent_for_someone_else(
    login_app: Any, browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    other = (
        await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR})
    ).json()
    token = (await patient_token(browser, new_bsn()))["access_token"]
    async with as_patient(login_app, token) as patient:
        body = consent_body(login_app, {"permit": {"to": HOSPITAL_CATEGORY}})
        body["patient"] = {"reference": f"Patient/{other['id']}"}
        created = await patient.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})
        assert created.status_code == 201, created.text
        assert created.json()["patient"]["reference"] != f"Patient/{other['id']}"
        own = await patient.post(
            "/fhir/Consent/$evaluate",
            json=evaluate_body(patient=f"Patient/{other['id']}", resourceType="Observation"),
            headers={"Content-Type": FHIR},
        )
        assert own.status_code == 403


async def test_a_member_cannot_read_or_write_consents(app: Any) -> None:
    member = await register_system(app, scope="system/*.cruds", role="member")
    async with gateway_client(app) as http:
        token = await fetch_token(http, member)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Acting-Practitioner": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900011111",
        }
        search = await http.get("/fhir/Consent", headers=headers)
        assert search.status_code == 403
        assert search.json()["resourceType"] == "OperationOutcome"
        write = await http.post(
            "/fhir/Consent",
            json={"resourceType": "Consent"},
            headers={**headers, "Content-Type": FHIR},
        )
        assert write.status_code == 403


async def test_invalid_consents_are_refused_naming_the_problem(
    login_app: Any, browser: httpx.AsyncClient
) -> None:
    token = (await patient_token(browser, new_bsn()))["access_token"]
    async with as_patient(login_app, token) as patient:
        body = consent_body(login_app, {"permit": {"to": HOSPITAL_CATEGORY}})
        body["provision"]["purpose"] = [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HMARKT"}
        ]
        response = await patient.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})
        assert response.status_code == 422, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "purpose" in outcome["issue"][0]["diagnostics"].lower() or "HMARKT" in response.text


async def test_an_administrators_evaluate_names_a_patient_by_a_valid_reference(
    client: httpx.AsyncClient,
) -> None:
    """A probe's `Patient/../../x` was answered "deny", as if about someone."""
    question = {"requesterCategory": HOSPITAL_CATEGORY, "resourceType": "Condition"}
    for bad in ("Patient/../../x", "Patient/", "Patient/a b", "Organization/x"):
        refused = await client.post(
            "/fhir/Consent/$evaluate",
            json=evaluate_body(patient=bad, **question),
            headers={"Content-Type": FHIR},
        )
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["resourceType"] == "OperationOutcome"
    asked = await client.post(
        "/fhir/Consent/$evaluate", json=evaluate_body(patient="Patient/nobody-1", **question),
        headers={"Content-Type": FHIR},
    )  # fmt: skip
    assert asked.status_code == 200, asked.text


async def test_an_administrator_needs_the_patients_documented_request(
    client: httpx.AsyncClient, app: Any
) -> None:
    patient = (
        await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR})
    ).json()
    body = consent_body(app, {"permit": {"to": HOSPITAL_CATEGORY}})
    body["patient"] = {"reference": f"Patient/{patient['id']}"}
    body.pop("sourceAttachment", None)
    body.pop("sourceReference", None)
    undocumented = await client.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})
    assert undocumented.status_code == 422
    assert "documented request" in undocumented.json()["issue"][0]["diagnostics"]
    body["sourceAttachment"] = {"title": "Signed consent form, scanned 2026-11-20"}
    documented = await client.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})
    assert documented.status_code == 201, documented.text


async def test_a_consent_stays_with_its_patient(client: httpx.AsyncClient, app: Any) -> None:
    """An administrator's update moving a Consent to another patient is refused and changes nothing: it
    would have stayed in force for the first patient in every process that had compiled their consents."""
    first, second = [
        (
            await client.post(
                "/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR}
            )
        ).json()["id"]
        for _ in range(2)
    ]
    body = consent_body(app, {"permit": {"to": HOSPITAL_CATEGORY}})
    body["patient"] = {"reference": f"Patient/{first}"}
    body["sourceAttachment"] = {"title": "Signed consent form, scanned 2026-12-01"}
    stored = (await client.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})).json()
    question = {"requesterCategory": HOSPITAL_CATEGORY, "resourceType": "Condition"}
    assert await decision(client, patient=f"Patient/{first}", **question) == "permit"
    moved = {**stored, "patient": {"reference": f"Patient/{second}"}}
    refused = await client.put(f"/fhir/Consent/{stored['id']}", json=moved, headers={"Content-Type": FHIR})
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert issue["expression"] == ["Consent.patient"]
    assert "cannot change" in issue["diagnostics"]
    kept = (await client.get(f"/fhir/Consent/{stored['id']}")).json()
    assert kept["patient"] == {"reference": f"Patient/{first}"}
    assert kept["meta"]["versionId"] == stored["meta"]["versionId"]
    assert await decision(client, patient=f"Patient/{first}", **question) == "permit"
    assert await decision(client, patient=f"Patient/{second}", **question) == "deny"
    # nor can it be unbound from her: no patient, and a scope that is not the registry's (a review's)
    unbound = {k: v for k, v in stored.items() if k != "patient"}
    unbound["scope"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]
    }
    refused = await client.put(f"/fhir/Consent/{stored['id']}", json=unbound, headers={"Content-Type": FHIR})
    assert refused.status_code == 422, refused.text
    assert "cannot change" in refused.json()["issue"][0]["diagnostics"]
    assert await decision(client, patient=f"Patient/{first}", **question) == "permit"
    # an ordinary change of the same consent still goes through
    stored["status"] = "inactive"
    changed = await client.put(f"/fhir/Consent/{stored['id']}", json=stored, headers={"Content-Type": FHIR})
    assert changed.status_code == 200, changed.text
    assert await decision(client, patient=f"Patient/{first}", **question) == "deny"


async def test_purposes_come_from_the_regions_policy(client: httpx.AsyncClient, app: Any) -> None:
    """The policy allows TREAT, COC, PATRQT; ETREAT only when its emergency rule is on (it is off)."""
    assert "TREAT" in app.state.runtime.policy.purposes
    assert not app.state.runtime.policy.document.emergency.enabled
    assert (await client.get("/fhir/Organization", headers={"X-Purpose-Of-Use": "COC"})).status_code == 200
    for purpose, reason in (("HMARKT", None), ("ETREAT", "patient unconscious")):
        headers = {"X-Purpose-Of-Use": purpose}
        if reason:
            headers["X-Break-Glass-Reason"] = reason
        refused = await client.get("/fhir/Organization", headers=headers)
        assert refused.status_code in (400, 403), refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"


async def test_directives_of_other_scopes_are_clinical_data_not_privacy_consents(
    client: httpx.AsyncClient,
) -> None:
    """An advance directive (scope adr) is stored as written: no policy check, never read by the engine."""
    from tests.conftest import SHARED_DATA, load_json

    directive = load_json(SHARED_DATA / "nl-core" / "nl-core-AdvanceDirective-01.json")
    directive.pop("id", None)
    response = await client.post("/fhir/Consent", json=directive, headers={"Content-Type": FHIR})
    assert response.status_code == 201, response.text
    assert response.json()["scope"] == directive["scope"]


async def save_consent(patient: httpx.AsyncClient, app: Any, compact: dict[str, Any]) -> dict[str, Any]:
    saved = await patient.post(
        "/fhir/Consent", json=consent_body(app, compact), headers={"Content-Type": FHIR}
    )
    assert saved.status_code == 201, saved.text
    return dict(saved.json())


async def draft_decision(http: httpx.AsyncClient, draft: dict[str, Any], **values: str) -> httpx.Response:
    body = evaluate_body(**values)
    body["parameter"].append({"name": "draft", "resource": draft})
    return await http.post("/fhir/Consent/$evaluate", json=body, headers={"Content-Type": FHIR})


async def test_a_draft_previews_the_decision_without_storing_anything(
    login_app: Any, browser: httpx.AsyncClient
) -> None:
    """The patient app's preview: "if I save this, what will the hospital see?" (and a revocation's)."""
    token = (await patient_token(browser, new_bsn()))["access_token"]
    medication = {"requesterCategory": HOSPITAL_CATEGORY, "resourceType": "MedicationRequest"}
    allergies = {"requesterCategory": HOSPITAL_CATEGORY, "resourceType": "AllergyIntolerance"}
    async with as_patient(login_app, token) as patient:
        saved = await save_consent(
            patient, login_app, {"permit": {"to": HOSPITAL_CATEGORY, "data": ["medicatie"]}}
        )
        before = len((await patient.get("/fhir/Consent")).json()["entry"])

        more = consent_body(login_app, {"permit": {"to": HOSPITAL_CATEGORY, "data": ["allergieen"]}})
        answer = await draft_decision(patient, more, **allergies)
        assert answer.status_code == 200, answer.text
        assert next(p["valueCode"] for p in answer.json()["parameter"] if p["name"] == "decision") == "permit"
        assert await decision(patient, **allergies) == "deny"  # the draft was not saved ...

        revoked = {**saved, "status": "inactive"}
        answer = await draft_decision(patient, revoked, **medication)
        assert next(p["valueCode"] for p in answer.json()["parameter"] if p["name"] == "decision") == "deny"
        assert await decision(patient, **medication) == "permit"  # ... nor the revocation
        assert len((await patient.get("/fhir/Consent")).json()["entry"]) == before == 1

        broken = {**more, "provision": {"type": "maybe"}}
        refused = await draft_decision(patient, broken, **allergies)
        assert 400 <= refused.status_code < 500
        assert refused.json()["resourceType"] == "OperationOutcome"
        not_a_consent = await draft_decision(patient, {"resourceType": "Patient"}, **allergies)
        assert not_a_consent.status_code == 400
        # found by a security test: a draft's structure went unchecked, and these were 500s
        for shape in ({"actor": [{"role": "x"}]}, {"class": [1]}):
            odd = {**more, "provision": {**more["provision"], **shape}}
            answer = await draft_decision(patient, odd, **allergies)
            assert 400 <= answer.status_code < 500, answer.text
        odd_scope = await draft_decision(patient, {**more, "scope": {"coding": ["x"]}}, **allergies)
        assert 400 <= odd_scope.status_code < 500, odd_scope.text


async def test_several_kinds_of_data_are_asked_in_one_evaluate_as_each_alone(
    login_app: Any, browser: httpx.AsyncClient
) -> None:
    """The patient app asks about every kind of data at once (one call and one audit record, not one per
    kind); each `result` is the decision the single question gets, in the order asked."""
    token = (await patient_token(browser, new_bsn()))["access_token"]
    kinds = ["MedicationRequest", "AllergyIntolerance", "Condition"]
    async with as_patient(login_app, token) as patient:
        await save_consent(patient, login_app, {"permit": {"to": HOSPITAL_CATEGORY, "data": ["medicatie"]}})
        more = consent_body(login_app, {"permit": {"to": HOSPITAL_CATEGORY, "data": ["allergieen"]}})
        for draft, expected in ((None, ["permit", "deny", "deny"]), (more, ["permit", "permit", "deny"])):
            body = evaluate_body(requesterCategory=HOSPITAL_CATEGORY)
            body["parameter"] += [
                {"name": "question", "part": [{"name": "resourceType", "valueCode": kind}]} for kind in kinds
            ]
            if draft is not None:
                body["parameter"].append({"name": "draft", "resource": draft})
            answer = await patient.post("/fhir/Consent/$evaluate", json=body, headers={"Content-Type": FHIR})
            assert answer.status_code == 200, answer.text
            results = [
                {p["name"]: p.get("valueCode") for p in r["part"]}
                for r in answer.json()["parameter"]
                if r["name"] == "result"
            ]
            assert [r["resourceType"] for r in results] == kinds
            assert [r["decision"] for r in results] == expected
            for kind, result in zip(kinds, results, strict=True):  # as each question alone
                one = evaluate_body(requesterCategory=HOSPITAL_CATEGORY, resourceType=kind)
                if draft is not None:
                    one["parameter"].append({"name": "draft", "resource": draft})
                alone = await patient.post(
                    "/fhir/Consent/$evaluate", json=one, headers={"Content-Type": FHIR}
                )
                single = next(p["valueCode"] for p in alone.json()["parameter"] if p["name"] == "decision")
                assert result["decision"] == single, (kind, draft is not None)

        mixed = evaluate_body(requesterCategory=HOSPITAL_CATEGORY, resourceType="Condition")
        mixed["parameter"].append(
            {"name": "question", "part": [{"name": "resourceType", "valueCode": "Goal"}]}
        )
        odd_part = evaluate_body(requesterCategory=HOSPITAL_CATEGORY)
        odd_part["parameter"].append({"name": "question", "part": [{"name": "patient", "valueString": "x"}]})
        unknown = evaluate_body(requesterCategory=HOSPITAL_CATEGORY)
        unknown["parameter"].append(
            {"name": "question", "part": [{"name": "resourceType", "valueCode": "Foo"}]}
        )
        for body in (mixed, odd_part, unknown):
            refused = await patient.post("/fhir/Consent/$evaluate", json=body, headers={"Content-Type": FHIR})
            assert refused.status_code == 400, refused.text


async def test_an_evaluate_question_about_nobody_is_refused_not_answered_deny(
    login_app: Any, browser: httpx.AsyncClient
) -> None:
    """A misspelt parameter was ignored and the question, about no requester at all, answered "deny" as if
    the patient had refused (an integrator's trial): each of these is a 400 naming what is wrong."""
    token = (await patient_token(browser, new_bsn()))["access_token"]
    async with as_patient(login_app, token) as patient:
        for values, says in (
            ({"organization": "00000201", "resourceType": "AllergyIntolerance"}, "organization"),
            ({"resourceType": "AllergyIntolerance"}, "requester"),
            ({"requester": "99999999", "resourceType": "AllergyIntolerance"}, "99999999"),
            (
                {"requesterCategory": HOSPITAL_CATEGORY, "source": "99999999", "resourceType": "Condition"},
                "source",
            ),
            # terms the region does not know (a user's trial: resourceType Foo was answered deny)
            ({"requesterCategory": HOSPITAL_CATEGORY, "resourceType": "Foo"}, "Foo"),
            ({"requesterCategory": "bakkers", "resourceType": "Condition"}, "bakkers"),
            (
                {"requesterCategory": HOSPITAL_CATEGORY, "resourceType": "Condition", "purpose": "SHOP"},
                "SHOP",
            ),
        ):
            answer = await patient.post(
                "/fhir/Consent/$evaluate", json=evaluate_body(**values), headers={"Content-Type": FHIR}
            )
            assert answer.status_code == 400, (values, answer.text)
            assert says in answer.json()["issue"][0]["diagnostics"], answer.text
        empty = await patient.post(
            "/fhir/Consent/$evaluate", json={"resourceType": "Parameters"}, headers={"Content-Type": FHIR}
        )
        assert empty.status_code == 400 and "requester" in empty.json()["issue"][0]["diagnostics"]
        assert (
            await decision(patient, requesterCategory=HOSPITAL_CATEGORY, resourceType="Condition") == "deny"
        )
