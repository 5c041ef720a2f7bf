"""The functions the router calls: Parameters for $evaluate, and the per-resource filter."""

from __future__ import annotations

from datetime import datetime

from rzcp.consent.cases import consent_from_compact
from rzcp.consent.compiled import compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.model import Request
from rzcp.consent.policy import Policy
from rzcp.consent.service import filter_resources, request_for_resource, to_parameters

LAB = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
VITAL = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}


def _request() -> Request:
    return Request(
        requester_ura="00000201",
        requester_category="ziekenhuizen-labs",
        source_ura="00000101",
        source_category="huisartsen",
        purpose="TREAT",
        moment=datetime(2025, 6, 1, 10),
        resource_type="Observation",
    )


def test_parameters_carry_decision_reason_and_deciding_consents(policy: Policy) -> None:
    compiled = compile_consents(
        [consent_from_compact({"id": "c1", "version": 3, "permit": {"to": "ziekenhuizen-labs"}}, policy)]
    )
    decision = decide(compiled, policy, _request())
    parameters = to_parameters(decision)
    assert parameters["resourceType"] == "Parameters"
    values = {p["name"]: p for p in parameters["parameter"]}
    assert values["decision"]["valueCode"] == "permit"
    assert values["basis"]["valueCode"] == "permitted"
    assert "Consent/c1/_history/3" in values["reason"]["valueString"]
    assert (
        values["provisional"]["valueBoolean"] is True
    )  # the observation's category and labels are not known yet
    part = {p["name"]: p for p in values["deciding"]["part"]}
    assert part["consent"]["valueReference"]["reference"] == "Consent/c1/_history/3"


def test_a_permitted_source_still_withholds_what_the_consents_do_not_cover(policy: Policy) -> None:
    compiled = compile_consents(
        [
            consent_from_compact(
                {
                    "id": "c1",
                    "permit": {"to": "ziekenhuizen-labs", "except": [{"deny": {"data": ["labuitslagen"]}}]},
                },
                policy,
            )
        ]
    )
    resources = [
        {
            "resourceType": "Observation",
            "id": "lab",
            "category": [{"coding": [LAB]}],
            "effectiveDateTime": "2025-01-01",
        },
        {"resourceType": "Observation", "id": "bp", "category": [{"coding": [VITAL]}]},
        {
            "resourceType": "Observation",
            "id": "psy",
            "category": [{"coding": [VITAL]}],
            "meta": {"security": [PSY]},
        },
    ]
    assert decide(compiled, policy, _request()).permitted
    kept = filter_resources(compiled, policy, _request(), resources)
    assert [r["id"] for r in kept] == ["bp"]
    exact = request_for_resource(_request(), resources[0])
    assert exact.data_moment == datetime(2025, 1, 1)
    assert "http://terminology.hl7.org/CodeSystem/observation-category|laboratory" in (exact.codes or ())
