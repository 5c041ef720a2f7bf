"""The AuditEvent builder: NEN 7513 fields in BALP shape, the searched columns read back, no content."""

from __future__ import annotations

import base64
from datetime import datetime

import orjson

from rzcp.audit import AuditFacts, build_event, facts_from_principal, outcome_for_status
from rzcp.audit.chain import canonical
from rzcp.audit.events import index_columns
from rzcp.auth.principal import Identifier, Principal, RequestContext
from rzcp.auth.scopes import ScopeSet

from .conftest import UZI, make_facts


def _agent(event: dict, code: str) -> dict:
    return next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == code)


def _entities(event: dict, code: str) -> list[dict]:
    return [e for e in event["entity"] if e.get("type", {}).get("code") == code]


def test_search_with_consent_decisions() -> None:
    event = build_event(make_facts(correlation_id="req-42"))
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "rest"
    assert [s["code"] for s in event["subtype"]] == ["search-type", "AuthZ-Consent"]
    assert event["action"] == "E"
    assert event["recorded"] == "2026-03-04T13:05:06.789Z"
    assert event["outcome"] == "0"
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery",
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.AuthZconsent",
    ]
    # the user: the acting practitioner, requestor, with purpose of use
    user = _agent(event, "IRCP")
    assert user["requestor"] is True
    assert user["who"]["identifier"] == {"system": UZI, "value": "900012345"}
    assert user["name"] == "dr. A. de Vries"
    assert user["role"] == [{"text": "huisarts"}]
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    # the organisation and its system, with the access point
    org = _agent(event, "PROV")
    assert org["who"]["identifier"]["value"] == "00001111"
    assert org["who"]["display"] == "Huisartsenpraktijk De Linde"
    client = _agent(event, "110153")
    assert client["who"]["identifier"]["value"] == "his-huisarts"
    assert client["network"] == {"address": "192.0.2.10", "type": "2"}
    assert client["altId"].startswith("jti-")
    assert _agent(event, "110152")["who"]["display"] == "rzcp-gateway"
    # the patient, what was asked and what was returned
    patient = [e for e in event["entity"] if e.get("role", {}).get("code") == "1"]
    assert patient[0]["what"] == {"reference": "Patient/p1"}
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == "patient=p1&category=laboratory"
    returned = _entities(event, "Observation")
    assert [{d["type"]: d["valueString"] for d in e["detail"]} for e in returned] == [
        {"count": "3", "source": "00002222"},
        {"count": "1", "source": "00003333"},
    ]
    # the basis: each decision, and the deciding Consent with its version
    decisions = _entities(event, "consent-decision")
    assert [{d["type"]: d["valueString"] for d in e["detail"]} for e in decisions] == [
        {"decision": "permit", "source": "00002222", "dataClass": "lab", "consent": "Consent/c1/_history/2"},
        {"decision": "deny", "source": "00004444", "dataClass": "lab", "rule": "region-default-deny"},
    ]
    assert _entities(event, "Consent")[0]["what"] == {"reference": "Consent/c1/_history/2"}
    assert event["purposeOfEvent"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "TREAT",
    }
    assert _entities(event, "XrequestId")[0]["what"]["identifier"]["value"] == "req-42"
    assert not _entities(event, "emergency")


def test_index_columns_read_back() -> None:
    event = build_event(make_facts(correlation_id="req-7"))
    columns = index_columns(event)
    assert columns == {
        "recorded": datetime(2026, 3, 4, 13, 5, 6, 789000),
        "event_id": event["id"],
        "type_code": "rest",
        "subtype": "search-type",
        "action": "E",
        "outcome": "0",
        "patient": "Patient/p1",
        "agent": f"{UZI}|900012345",
        "member_ura": "00001111",
        "client_id": "his-huisarts",
        "purpose": "TREAT",
        "emergency": False,
        "correlation_id": "req-7",
    }


def test_break_the_glass() -> None:
    event = build_event(
        make_facts(purpose="ETREAT", emergency_reason="bewusteloos binnengebracht", decisions=())
    )
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert _entities(event, "emergency")[0]["description"] == "bewusteloos binnengebracht"
    assert index_columns(event)["emergency"] is True
    assert [s["code"] for s in event["subtype"]] == ["search-type"]


def test_a_bsn_in_the_break_the_glass_reason_is_not_recorded() -> None:
    """The reason is the practitioner's own words, and may name the patient by BSN."""
    system = Principal(
        kind="system",
        subject="his",
        scopes=ScopeSet.parse("system/Observation.rs"),
        context=RequestContext("ETREAT", Identifier(UZI, "9001"), "BSN 999967551 bewusteloos binnengebracht"),
    )
    facts = facts_from_principal(system, interaction="read", status=200, correlation_id="c")
    event = build_event(facts)
    assert _entities(event, "emergency")[0]["description"] == "BSN * bewusteloos binnengebracht"
    assert "999967551" not in orjson.dumps(event).decode()


def test_denied_and_failed_requests() -> None:
    unauthenticated = build_event(
        AuditFacts(
            interaction="read", status=401, correlation_id="c", resource_type="Patient", target="Patient/p1"
        )
    )
    assert unauthenticated["outcome"] == "4"
    assert unauthenticated["action"] == "R"
    client = _agent(unauthenticated, "110153")
    assert client["requestor"] is True and client["who"] == {"display": "unauthenticated"}
    assert index_columns(unauthenticated)["agent"] is None
    failed = build_event(make_facts(status=502, outcome_desc="source 00002222 timed out", returned=()))
    assert failed["outcome"] == "8" and failed["outcomeDesc"] == "source 00002222 timed out"
    assert (
        outcome_for_status(204) == "0" and outcome_for_status(403) == "4" and outcome_for_status(503) == "8"
    )


def test_from_principal() -> None:
    system = Principal(
        kind="system",
        subject="his",
        scopes=ScopeSet.parse("system/Observation.rs"),
        role="member",
        client_id="his",
        member_ura="00001111",
        token_id="jti-1",
        context=RequestContext("ETREAT", Identifier(UZI, "9001"), "reanimatie"),
    )
    facts = facts_from_principal(
        system, interaction="read", status=200, correlation_id="c", patient="Patient/p9"
    )
    assert facts.practitioner is not None and facts.practitioner.token == f"{UZI}|9001"
    assert facts.emergency and facts.emergency_reason == "reanimatie"
    assert facts.member_ura == "00001111" and facts.client_id == "his" and facts.token_id == "jti-1"
    patient = Principal(
        kind="patient", subject="p9", scopes=ScopeSet.parse("patient/AuditEvent.rs"), patient_id="p9"
    )
    event = build_event(
        facts_from_principal(
            patient, interaction="search-type", status=200, correlation_id="c", purpose="PATRQT"
        )
    )
    assert index_columns(event)["agent"] == "Patient/p9"
    assert index_columns(event)["patient"] == "Patient/p9"
    unknown = facts_from_principal(None, interaction="read", status=401, correlation_id="c")
    assert unknown.kind is None


def test_no_clinical_content_and_canonical_form() -> None:
    event = build_event(make_facts())
    text = orjson.dumps(event).decode()
    for clinical in ("valueQuantity", "valueCodeableConcept", "laboratory result", "Glucose"):
        assert clinical not in text
    # canonical: sorted keys, compact, the same bytes for the same record however its dict was ordered
    shuffled = dict(reversed(list(event.items())))
    assert canonical(shuffled) == canonical(event)
    assert b": " not in canonical(event) and canonical(event).startswith(b'{"action":"E"')


def test_reading_a_messages_status_is_a_read_not_a_push() -> None:
    """Found by an integrator: every status poll counted as a push in the console's lists and charts."""
    from rzcp.admin.classify import classify
    from rzcp.audit.http import _interaction

    kinds = {}
    for method, path in (("POST", "/fhir/$process-message"), ("GET", "/fhir/$process-message/m-1")):
        interaction, operation = _interaction(method, None, path)
        facts = make_facts(interaction=interaction, operation=operation, status=200, decisions=())
        kinds[method] = classify(build_event(facts)).kind
    assert kinds == {"POST": "push", "GET": "read"}
