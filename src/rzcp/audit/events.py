"""The AuditEvent builder: plain facts in (`AuditFacts`, filled by the request layer), an AuditEvent out.

Shaped after IHE Basic Audit Log Patterns (BALP) with the NEN 7513 fields:

| NEN 7513                   | where in the AuditEvent                                                    |
| -------------------------- | -------------------------------------------------------------------------- |
| event, action              | type (audit-event-type `rest`), subtype (restful-interaction), action      |
| moment                     | recorded                                                                   |
| user (acting practitioner) | agent IRCP, requestor, who.identifier `system|value`, name, role, purpose  |
| responsible user           | agent RESP (when the facts name one)                                       |
| organisation, its system   | agent PROV (URA); agent 110153 Source Role ID (client id, token id)        |
| access point               | the client agent's network.address                                         |
| patient                    | entity role 1 Patient, `Patient/<regional id>`                             |
| what was asked             | entity role 24 Query (base64 query) or role 4 (the resource read/written)  |
| what was returned          | entity per (source member, resource type): count and source URA           |
| purpose of use             | purposeOfEvent (v3 ActReason), and the user agent's purposeOfUse           |
| basis: consent decision    | subtype AuthZ-Consent; a `consent-decision` entity per decision and one    |
|                            | entity per deciding Consent `Consent/id/_history/v` (BALP AuthZconsent)    |
| basis: emergency procedure | purposeOfEvent ETREAT and an `emergency` entity with the stated reason     |
| outcome                    | outcome 0/4/8/12, outcomeDesc                                              |
| correlation id             | entity BALP XrequestId                                                     |
| console action (admins)    | type `console` (this gateway's code) and a `console` entity: the action    |
|                            | and its parameters (never a BSN)                                           |

No clinical content: types, counts, ids and codes only. `index_columns` reads back the searched columns from
a built event, so the writer needs nothing but the dict.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from rzcp.audit.tables import audit_events
from rzcp.auth.bsn import without_bsns_in_words

if TYPE_CHECKING:
    from rzcp.auth.principal import Principal

# --- code systems --------------------------------------------------------------------------------------
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUTHZ_SUBTYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
BALP_PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
#: This gateway's own codes and identifier systems.
RZCP = "https://rzcp.nl/fhir/CodeSystem/audit"
CLIENT_ID = "https://rzcp.nl/fhir/NamingSystem/client-id"
PERSON_SUBJECT = "https://rzcp.nl/fhir/NamingSystem/person"

EMERGENCY_PURPOSE = "ETREAT"
#: The type code (system RZCP) of the administrators' console's records.
CONSOLE = "console"
Outcome = Literal["0", "4", "8", "12"]

#: restful-interaction code -> (AuditEvent.action, BALP profile stem)
_INTERACTIONS: dict[str, tuple[str, str]] = {
    "read": ("R", "Read"),
    "vread": ("R", "Read"),
    "search": ("E", "Query"),
    "search-type": ("E", "Query"),
    "search-system": ("E", "Query"),
    "history": ("R", "Read"),
    "history-instance": ("R", "Read"),
    "history-type": ("R", "Read"),
    "history-system": ("R", "Read"),
    "create": ("C", "Create"),
    "update": ("U", "Update"),
    "patch": ("U", "Update"),
    "delete": ("D", "Delete"),
    "operation": ("E", ""),
    "transaction": ("E", ""),
    "batch": ("E", ""),
    "capabilities": ("R", ""),
}


@dataclass(frozen=True)
class Practitioner:
    """A person acting: identifier as in X-Acting-Practitioner, and what the directory knows of them."""

    system: str
    value: str
    name: str | None = None
    #: Their role in words and as a code (e.g. an UZI/AGB role or SNOMED occupation), when known.
    role: str | None = None
    role_code: str | None = None
    role_system: str | None = None

    @property
    def token(self) -> str:
        return f"{self.system}|{self.value}"


@dataclass(frozen=True)
class Returned:
    """What one source member returned of one resource type: a count, never content."""

    resource_type: str
    count: int
    member_ura: str | None = None


@dataclass(frozen=True)
class Decision:
    """One consent decision: for one source member (and class of data), permit or deny, and why."""

    permit: bool
    member_ura: str | None = None
    data_class: str | None = None
    #: The Consents that decided, as (id, versionId).
    consents: tuple[tuple[str, str], ...] = ()
    #: The policy rule when no Consent decided (region default, emergency rule ...).
    rule: str | None = None


@dataclass(frozen=True)
class AuditFacts:
    """Everything one request's AuditEvent says, as plain values. The request layer fills it."""

    #: restful-interaction code (read, vread, search-type, create, update, delete, operation ...).
    interaction: str
    #: HTTP status of the response; sets `outcome` when that is not given.
    status: int
    correlation_id: str
    # -- who
    #: system | patient | person, or None when nobody was authenticated (a 401).
    kind: Literal["system", "patient", "person"] | None = None
    subject: str | None = None
    client_id: str | None = None
    member_ura: str | None = None
    member_name: str | None = None
    #: member | auditor | admin
    role: str | None = None
    practitioner: Practitioner | None = None
    responsible: Practitioner | None = None
    #: Network address of the caller (the access point).
    address: str | None = None
    token_id: str | None = None
    # -- about whom and what
    #: `Patient/<regional id>`.
    patient: str | None = None
    resource_type: str | None = None
    #: `Type/id` of the resource read or written, for instance-level interactions.
    target: str | None = None
    #: The query string as asked (search parameters), for searches.
    query: str | None = None
    operation: str | None = None
    returned: tuple[Returned, ...] = ()
    # -- why, and on what basis
    purpose: str | None = "TREAT"
    emergency_reason: str | None = None
    decisions: tuple[Decision, ...] = ()
    # -- how it ended
    outcome: Outcome | None = None
    #: Short, for auditors: "consent denied", "source 01234567 timed out". Never internals.
    outcome_desc: str | None = None
    recorded: datetime | None = None
    event_id: str | None = None
    #: The audit source: this gateway.
    #: An action in the administrators' console (`members.add`, `audit.search` ...): the event's type is then
    #: `console`, and `console_params` (name, value) say with what (never a BSN: "bsn given").
    console_action: str | None = None
    console_params: tuple[tuple[str, str], ...] = ()
    site: str = "RZCP"
    observer: str = "rzcp-gateway"
    extra_profiles: tuple[str, ...] = field(default=())

    @property
    def emergency(self) -> bool:
        return self.purpose == EMERGENCY_PURPOSE


def outcome_for_status(status: int) -> Outcome:
    """0 success; 4 a refused or invalid request (4xx); 8 a failure of the gateway or a source (5xx)."""
    if status < 400:
        return "0"
    if status < 500:
        return "4"
    return "8"


def facts_from_principal(principal: Principal | None, **facts: Any) -> AuditFacts:
    """AuditFacts with the who-fields taken from auth's Principal (None when authentication failed)."""
    if principal is not None:
        context = principal.context
        practitioner = facts.pop("practitioner", None)
        if practitioner is None and principal.is_system and context.acting_practitioner is not None:
            practitioner = Practitioner(context.acting_practitioner.system, context.acting_practitioner.value)
        facts.setdefault("kind", principal.kind)
        facts.setdefault("subject", principal.subject)
        facts.setdefault("client_id", principal.client_id)
        facts.setdefault("member_ura", principal.member_ura)
        facts.setdefault("role", principal.role)
        facts.setdefault("token_id", principal.token_id)
        facts.setdefault("purpose", context.purpose_of_use)
        # A practitioner's own words, which may name the patient by BSN: the record keeps them without it.
        reason = context.break_glass_reason
        facts.setdefault("emergency_reason", reason and without_bsns_in_words(reason))
        if principal.is_patient and principal.patient_id:
            facts.setdefault("patient", f"Patient/{principal.patient_id}")
        facts["practitioner"] = practitioner
    return AuditFacts(**facts)


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    """A Coding. The display is left out: the code system gives it, and every byte is hashed and kept for
    years (displays would make each record about a fifth larger)."""
    return {"system": system, "code": code}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _instant(moment: datetime) -> tuple[str, datetime]:
    """FHIR instant (UTC, milliseconds) and the same moment as the naive UTC the tables keep."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment.isoformat(timespec="milliseconds") + "Z", moment


def build_event(facts: AuditFacts) -> dict[str, Any]:
    """The AuditEvent for these facts: a plain dict of strings, integers, booleans, lists and objects."""
    action, stem = _INTERACTIONS.get(facts.interaction, ("E", ""))
    recorded, _ = _instant(facts.recorded or datetime.now(UTC))
    outcome = facts.outcome or outcome_for_status(facts.status)
    subtype = [_coding(INTERACTION, facts.interaction)]
    profiles = []
    if stem:
        profiles.append(BALP_PROFILE + ("Patient" + stem if facts.patient else stem))
    if facts.decisions:
        subtype.append(_coding(AUTHZ_SUBTYPE, "AuthZ-Consent", "Authorization Decision using Consent"))
        profiles.append(BALP_PROFILE + "AuthZconsent")
    profiles.extend(facts.extra_profiles)

    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": facts.event_id or str(uuid.uuid4()),
        "type": _coding(RZCP, CONSOLE) if facts.console_action else _coding(EVENT_TYPE, "rest"),
        "subtype": subtype,
        "action": action,
        "recorded": recorded,
        "outcome": outcome,
        "agent": _agents(facts),
        "source": {
            "site": facts.site,
            "observer": {"display": facts.observer},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": _entities(facts),
    }
    if profiles:
        event["meta"] = {"profile": profiles}
    if facts.outcome_desc:
        event["outcomeDesc"] = facts.outcome_desc[:500]
    if facts.purpose:
        event["purposeOfEvent"] = [_concept(ACT_REASON, facts.purpose)]
    return event


def _agents(facts: AuditFacts) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    purpose = [_concept(ACT_REASON, facts.purpose)] if facts.purpose else None
    requestor_done = False
    if facts.practitioner is not None:
        p = facts.practitioner
        agent: dict[str, Any] = {
            "type": _concept(PARTICIPATION, "IRCP", "information recipient"),
            "who": {"identifier": {"system": p.system, "value": p.value}},
            "requestor": True,
        }
        if p.name:
            agent["name"] = p.name
            agent["who"]["display"] = p.name
        if p.role or p.role_code:
            agent["role"] = [
                {"coding": [_coding(p.role_system or RZCP, p.role_code or "role", p.role)], "text": p.role}
                if p.role_code
                else {"text": p.role}
            ]
        if purpose:
            agent["purposeOfUse"] = purpose
        agents.append(agent)
        requestor_done = True
    elif facts.kind == "patient" and facts.patient:
        agents.append(
            {
                "type": _concept(ROLE_CLASS, "PAT", "patient"),
                "who": {"reference": facts.patient},
                "requestor": True,
                **({"purposeOfUse": purpose} if purpose else {}),
            }
        )
        requestor_done = True
    elif facts.kind == "person" and facts.subject:
        agents.append(
            {
                "type": _concept(SECURITY_ROLE, "humanuser", "human user"),
                "who": {"identifier": {"system": PERSON_SUBJECT, "value": facts.subject}},
                "requestor": True,
                **({"role": [{"text": facts.role}]} if facts.role else {}),
            }
        )
        requestor_done = True
    if facts.responsible is not None:
        r = facts.responsible
        agents.append(
            {
                "type": _concept(PARTICIPATION, "RESP", "responsible party"),
                "who": {
                    "identifier": {"system": r.system, "value": r.value},
                    **({"display": r.name} if r.name else {}),
                },
                "requestor": False,
            }
        )
    if facts.member_ura:
        org: dict[str, Any] = {
            "type": _concept(ROLE_CLASS, "PROV", "healthcare provider"),
            "who": {"identifier": {"system": URA, "value": facts.member_ura}},
            "requestor": False,
        }
        if facts.member_name:
            org["who"]["display"] = facts.member_name
        agents.append(org)
    client: dict[str, Any] = {
        "type": _concept(DCM, "110153", "Source Role ID"),
        "requestor": not requestor_done,
    }
    if facts.client_id:
        client["who"] = {"identifier": {"system": CLIENT_ID, "value": facts.client_id}}
    else:
        client["who"] = {"display": "unauthenticated"}
    if facts.role and facts.kind == "system":
        client["role"] = [{"text": facts.role}]
    if facts.token_id:
        client["altId"] = facts.token_id
    if facts.address:
        client["network"] = {"address": facts.address, "type": "2"}
    agents.append(client)
    agents.append(
        {
            "type": _concept(DCM, "110152", "Destination Role ID"),
            "who": {"display": facts.observer},
            "requestor": False,
        }
    )
    return agents


def _detail(kind: str, value: str) -> dict[str, str]:
    return {"type": kind, "valueString": value}


def _entities(facts: AuditFacts) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if facts.patient:
        entities.append(
            {
                "what": {"reference": facts.patient},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    if facts.query is not None or facts.interaction.startswith("search"):
        query: dict[str, Any] = {
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "24", "Query"),
            "query": base64.b64encode((facts.query or "").encode()).decode(),
        }
        if facts.resource_type:
            query["detail"] = [_detail("resourceType", facts.resource_type)]
        entities.append(query)
    if (
        facts.target
        or facts.operation
        or (facts.resource_type and not facts.interaction.startswith("search"))
    ):
        asked: dict[str, Any] = {
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
        }
        if facts.target:
            asked["what"] = {"reference": facts.target}
        if facts.resource_type:
            asked["detail"] = [_detail("resourceType", facts.resource_type)]
        if facts.operation:
            asked["description"] = facts.operation
        entities.append(asked)
    for item in facts.returned:
        details = [_detail("count", str(int(item.count)))]
        if item.member_ura:
            details.append(_detail("source", item.member_ura))
        entities.append(
            {
                "type": _coding(RESOURCE_TYPES, item.resource_type),
                "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
                "description": "returned",
                "detail": details,
            }
        )
    consents: dict[str, None] = {}
    for decision in facts.decisions:
        details = [_detail("decision", "permit" if decision.permit else "deny")]
        if decision.member_ura:
            details.append(_detail("source", decision.member_ura))
        if decision.data_class:
            details.append(_detail("dataClass", decision.data_class))
        if decision.rule:
            details.append(_detail("rule", decision.rule))
        for cid, version in decision.consents:
            ref = f"Consent/{cid}/_history/{version}"
            consents[ref] = None
            details.append(_detail("consent", ref))
        entities.append(
            {
                "type": _coding(RZCP, "consent-decision", "Consent decision"),
                "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
                "detail": details,
            }
        )
    for ref in consents:
        entities.append(
            {
                "what": {"reference": ref},
                "type": _coding(RESOURCE_TYPES, "Consent"),
                "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
            }
        )
    if facts.console_action:
        console: dict[str, Any] = {"type": _coding(RZCP, CONSOLE), "description": facts.console_action}
        if facts.console_params:
            console["detail"] = [_detail(name, value[:500]) for name, value in facts.console_params]
        entities.append(console)
    if facts.emergency:
        entities.append(
            {
                "type": _coding(RZCP, "emergency", "Emergency procedure (break-the-glass)"),
                "description": (facts.emergency_reason or "")[:1000],
            }
        )
    entities.append(
        {
            "what": {"identifier": {"value": facts.correlation_id}},
            "type": _coding(BALP_ENTITY, "XrequestId", "X-Request-Id"),
        }
    )
    return entities


# --- reading the searched columns back ------------------------------------------------------------------


#: The searched columns' lengths (rzcp.audit.tables.audit_events), for `_fitted`.
_COLUMN_LIMITS = {
    column.name: column.type.length
    for column in audit_events.columns
    if isinstance(getattr(column.type, "length", None), int)
}


def first_code(value: Any) -> str | None:
    """The code of a Coding, or of a CodeableConcept's first coding (how the records carry each code)."""
    if isinstance(value, Mapping):
        if "code" in value:
            return value.get("code")
        codings = value.get("coding") or ()
        return codings[0].get("code") if codings else None
    return None


def index_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    """The searched columns of a built AuditEvent (see rzcp.audit.tables.INDEX_COLUMNS)."""
    _, recorded = _instant(datetime.fromisoformat(event["recorded"].replace("Z", "+00:00")))
    agent = member = client = None
    for item in event.get("agent", ()):
        kind = first_code(item.get("type"))
        who = item.get("who") or {}
        ident = who.get("identifier") or {}
        if item.get("requestor") and agent is None and kind != "110153":
            agent = who.get("reference") or (f"{ident.get('system')}|{ident.get('value')}" if ident else None)
        elif kind == "PROV":
            member = ident.get("value")
        elif kind == "110153" and ident.get("system") == CLIENT_ID:
            client = ident.get("value")
    patient = correlation = None
    for entity in event.get("entity", ()):
        role = first_code(entity.get("role"))
        kind = first_code(entity.get("type"))
        if role == "1" and patient is None:
            patient = (entity.get("what") or {}).get("reference")
        elif kind == "XrequestId":
            correlation = ((entity.get("what") or {}).get("identifier") or {}).get("value")
    purposes = event.get("purposeOfEvent") or ()
    purpose = first_code(purposes[0]) if purposes else None
    subtypes = event.get("subtype") or ()
    return _fitted(
        {
            "recorded": recorded,
            "event_id": event["id"],
            "type_code": first_code(event.get("type")) or "",
            "subtype": subtypes[0].get("code") if subtypes else None,
            "action": event.get("action"),
            "outcome": event.get("outcome", "0"),
            "patient": patient,
            "agent": agent,
            "member_ura": member,
            "client_id": client,
            "purpose": purpose,
            "emergency": purpose == EMERGENCY_PURPOSE,
            "correlation_id": correlation,
        }
    )


def _fitted(columns: dict[str, Any]) -> dict[str, Any]:
    """Each text cut to its column's length, and a NUL character replaced (PostgreSQL's text holds none).
    A hostile request (a 10,000-character id in the path, a long X-Request-ID, `patient=%00`: found by
    schemathesis, a 503 on PostgreSQL) must not fail the write of its record, nor of the batch it shares
    with others; the full value stays in the record's content (JSON, where a NUL is escaped), and no real
    id, URA or code is that long or holds a NUL."""
    for name, value in columns.items():
        if isinstance(value, str) and "\x00" in value:
            columns[name] = value.replace("\x00", "\ufffd")
    for name, limit in _COLUMN_LIMITS.items():
        value = columns.get(name)
        if isinstance(value, str) and len(value) > limit:
            columns[name] = value[:limit]
    return columns
