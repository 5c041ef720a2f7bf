"""`GET /consent/policy`: the region's public policy for apps that let a patient write consents, readable
without a token and the same as consent/policy.yaml."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import FHIR


async def test_the_policy_is_public_and_matches_the_regions_file(
    anonymous: httpx.AsyncClient, policy_data: dict[str, Any]
) -> None:
    response = await anonymous.get("/consent/policy")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert [c["code"] for c in body["organisation_categories"]["entries"]] == [
        c["code"] for c in policy_data["organisation_categories"]["entries"]
    ]
    assert {(c["key"], c["system"], c["code"]) for c in body["data_categories"]} == {
        (c["key"], c["system"], c["code"]) for c in policy_data["data_categories"]
    }
    assert [p["code"] for p in body["purposes"]] == [p["code"] for p in policy_data["purposes"]]
    assert body["emergency"]["enabled"] is policy_data["emergency"]["enabled"]


async def test_a_consent_built_from_the_published_codes_is_accepted(
    anonymous: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """What the endpoint publishes is enough to write a consent the gateway accepts (as the patient app
    does), without knowing the region's code systems beforehand."""
    published = (await anonymous.get("/consent/policy")).json()
    systems = published["systems"]
    scope_system, scope_code = systems["scope"].split("|")
    category = published["organisation_categories"]["entries"][0]["code"]
    data = [c for c in published["data_categories"] if not c["general"]][:2]
    patient = (
        await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR})
    ).json()
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": scope_system, "code": scope_code}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient['id']}"},
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
        },
        "sourceAttachment": {"title": "Consent form signed by the patient"},
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {"coding": [{"system": systems["participation"], "code": "IRCP"}]},
                    "reference": {
                        "type": "Group",
                        "identifier": {"system": systems["organisation_category"], "value": category},
                    },
                }
            ],
            "purpose": [{"system": systems["purpose"], "code": published["purposes"][0]["code"]}],
            "class": [{"system": c["system"], "code": c["code"]} for c in data],
        },
    }
    created = await client.post("/fhir/Consent", json=consent, headers={"Content-Type": FHIR})
    assert created.status_code == 201, created.text
