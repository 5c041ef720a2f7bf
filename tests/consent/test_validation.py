"""Checks beyond the schema: each failure names the problem and the element."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from rzcp.consent.cases import consent_from_compact
from rzcp.consent.policy import Policy
from rzcp.consent.service import check_and_prepare_consent
from rzcp.consent.validation import validate_consent
from rzcp.errors import InvalidResource
from rzcp.fhir.validation import validate_resource

MEMBERS = {"00000101", "00000201"}


def _consent(policy: Policy, provision: dict[str, Any], effect: str = "permit") -> dict[str, Any]:
    return consent_from_compact({"id": "x", effect: provision}, policy)


def _fails(policy: Policy, consent: dict[str, Any], expression: str, words: str) -> None:
    with pytest.raises(InvalidResource) as caught:
        validate_consent(consent, policy=policy, known_members=MEMBERS)
    assert caught.value.expression == (expression,)
    assert words in caught.value.message


def test_a_good_consent_passes(policy: Policy) -> None:
    consent = _consent(
        policy, {"to": "ura:00000201", "from": "huisartsen", "data": ["medicatie"], "purpose": ["TREAT"]}
    )
    validate_consent(consent, policy=policy, known_members=MEMBERS)
    validate_consent(consent, policy=policy, known_members=lambda ura: ura == "00000201")


def test_unknown_member(policy: Policy) -> None:
    _fails(
        policy,
        _consent(policy, {"to": "ura:99999999"}),
        "Consent.provision.actor[0].reference.identifier",
        "not a registered member",
    )


def test_unknown_category(policy: Policy) -> None:
    consent = _consent(policy, {"to": "huisartsen"})
    consent["provision"]["actor"][0]["reference"]["identifier"]["value"] = "tandartsen"
    _fails(policy, consent, "Consent.provision.actor[0].reference.identifier", "not an organisation category")


def test_unknown_purpose(policy: Policy) -> None:
    _fails(policy, _consent(policy, {"purpose": ["HMARKT"]}), "Consent.provision.purpose[0]", "not allowed")


def test_unknown_data_category(policy: Policy) -> None:
    _fails(
        policy,
        _consent(policy, {"data": ["http://example.org/x|secret"]}),
        "Consent.provision.class[0]",
        "neither a data category",
    )


def test_unknown_resource_type(policy: Policy) -> None:
    _fails(
        policy,
        _consent(policy, {"types": ["MedicationOrder"]}),
        "Consent.provision.class[0]",
        "not an R4 resource type",
    )


def test_period_backwards(policy: Policy) -> None:
    _fails(
        policy,
        _consent(policy, {"period": "2025-12-31 / 2025-01-01"}),
        "Consent.provision.period",
        "ends before it starts",
    )


def test_period_absurd(policy: Policy) -> None:
    _fails(
        policy,
        _consent(policy, {"period": "2025-01-01 / 2500-12-31"}),
        "Consent.provision.period.end",
        "1900 to 2200",
    )
    _fails(
        policy,
        _consent(policy, {"period": "2025-01-01 / 9999-12-31"}),
        "Consent.provision.period",
        "not a valid",
    )


def test_exception_period_outside_its_parent(policy: Policy) -> None:
    consent = _consent(
        policy,
        {"period": "2025-01-01 / 2025-06-30", "except": [{"deny": {"period": "2025-06-01 / 2025-12-31"}}]},
    )
    _fails(policy, consent, "Consent.provision.provision[0].period", "within the period")


def test_nested_needs_a_type(policy: Policy) -> None:
    consent = _consent(policy, {"except": [{"deny": {"data": ["medicatie"]}}]})
    del consent["provision"]["provision"][0]["type"]
    _fails(policy, consent, "Consent.provision.provision[0].type", "must say permit or deny")


def test_actor_role(policy: Policy) -> None:
    consent = _consent(policy, {"to": "huisartsen"})
    consent["provision"]["actor"][0]["role"]["coding"][0]["code"] = "AUT"
    _fails(policy, consent, "Consent.provision.actor[0].role", "IRCP or PRCP")


def test_scope_must_be_privacy(policy: Policy) -> None:
    consent = _consent(policy, {})
    consent["scope"]["coding"][0]["code"] = "research"
    _fails(policy, consent, "Consent.scope", "privacy consents only")


def test_the_patient_is_forced_to_the_writer(policy: Policy) -> None:
    body = _consent(policy, {"to": "huisartsen"})
    body["patient"] = {"reference": "Patient/somebody-else"}
    prepared = check_and_prepare_consent(body, patient_ref="Patient/me", policy=policy, known_members=MEMBERS)
    assert prepared["patient"] == {"reference": "Patient/me"}
    assert body["patient"] == {"reference": "Patient/somebody-else"}


def test_the_readmes_example_consent_is_valid_and_says_what_the_readme_says(policy: Policy) -> None:
    """Integrators copy it: it must stay a Consent the gateway accepts, and mean hospitals, medication,
    treatment."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"is:\n\n```json\n(.*?)```", readme, re.S)
    assert block is not None
    consent = orjson.loads(block.group(1).replace("<regional id>", "p1"))
    validate_resource(consent, expected_type="Consent")
    validate_consent(consent, policy=policy, known_members=MEMBERS)
    expected = consent_from_compact(
        {"id": "x", "permit": {"to": "ziekenhuizen-labs", "data": "medicatie", "purpose": "TREAT"}}, policy
    )
    assert consent["provision"] == expected["provision"]
