"""What the FHIR router calls: plain async functions between HTTP and the consent domain.

Write path (a patient or an administrator writes a Consent), in the request's write transaction:

    resource = check_and_prepare_consent(body, patient_ref=..., policy=..., known_members=...)
    version = await store.create(resource)            # or update / delete
    await note_consent_change(conn, patient_ref, version.res_id)

Decision path (before a source is asked, and again per resource that comes back):

    decision = await evaluate(conn, cache, policy, patient_ref, request)
    kept = filter_resources(compiled, policy, request, resources)

`$evaluate` (a dry run for the patient app and administrators) answers `to_parameters(decision)`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.consent.cache import ConsentCache, note_consent_change, rules_for
from rzcp.consent.compiled import CompiledConsents, compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.model import Decision, Request
from rzcp.consent.policy import Policy
from rzcp.consent.repository import current_consents, patient_reference
from rzcp.consent.validation import KnownMembers, validate_consent
from rzcp.fhir.search.values import parse_date_range

__all__ = [
    "check_and_prepare_consent",
    "evaluate",
    "evaluate_draft",
    "filter_resources",
    "note_consent_change",
    "request_for_resource",
    "to_parameters",
]

#: Where a resource's clinical date is, for Consent.provision.dataPeriod: the first element present.
_DATE_ELEMENTS = (
    "effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued", "authoredOn", "recordedDate",
    "occurrenceDateTime", "performedDateTime", "performedPeriod", "onsetDateTime", "whenHandedOver",
    "dateAsserted", "date", "period", "started", "created",
)  # fmt: skip


def check_and_prepare_consent(
    resource: Mapping[str, Any], *, patient_ref: str, policy: Policy, known_members: KnownMembers
) -> dict[str, Any]:
    """The Consent to store: `Consent.patient` forced to the patient whatever the body said, then checked
    against the region's policy (`InvalidResource` naming the element when it fails)."""
    prepared = copy.deepcopy(dict(resource))
    prepared["patient"] = {"reference": patient_reference(patient_ref)}
    validate_consent(prepared, policy=policy, known_members=known_members)
    return prepared


async def evaluate(
    conn: AsyncConnection, cache: ConsentCache, policy: Policy, patient_ref: str, request: Request
) -> Decision:
    """The decision for one request about the patient, from their current compiled consents."""
    compiled = await rules_for(conn, cache, patient_ref)
    return decide(compiled, policy, request)


#: The id a draft without one is decided under (it names the draft in the decision's deciding consents).
DRAFT_ID = "draft"


async def evaluate_draft(
    conn: AsyncConnection,
    policy: Policy,
    patient_ref: str,
    request: Request,
    draft: Mapping[str, Any],
    *,
    known_members: KnownMembers,
) -> Decision:
    """The decision as if `draft` were saved among the patient's consents (the patient app's preview):
    checked like a write, compiled with the others (replacing the consent with its id), never stored nor
    cached."""
    prepared = check_and_prepare_consent(
        draft, patient_ref=patient_ref, policy=policy, known_members=known_members
    )
    draft_id = str(prepared.get("id") or DRAFT_ID)
    prepared["id"] = draft_id
    prepared.setdefault("meta", {}).setdefault("versionId", "draft")
    others = [c for c in await current_consents(conn, patient_ref) if c.get("id") != draft_id]
    return decide(compile_consents([*others, prepared]), policy, request)


def request_for_resource(base: Request, resource: Mapping[str, Any]) -> Request:
    """The request about one resource that came back: its type, category and code tokens, security
    labels and clinical date, on top of who asks and why."""
    codes: set[str] = set()
    for element in ("category", "code", "type", "class"):
        value = resource.get(element)
        for concept in value if isinstance(value, list) else [value] if isinstance(value, Mapping) else []:
            for coding in concept.get("coding") or [] if isinstance(concept, Mapping) else []:
                if coding.get("system") and coding.get("code"):
                    codes.add(f"{coding['system']}|{coding['code']}")
    labels = frozenset(
        f"{s.get('system')}|{s.get('code')}"
        for s in (resource.get("meta") or {}).get("security") or []
        if s.get("code")
    )
    return base.about(
        resource_type=resource.get("resourceType", base.resource_type),
        codes=frozenset(codes),
        labels=labels,
        data_moment=_clinical_date(resource),
    )


def filter_resources(
    compiled: CompiledConsents, policy: Policy, base: Request, resources: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The resources of a permitted source that the patient's consents let through, one by one (so a
    source can still withhold its sensitive entries)."""
    return [r for r in resources if decide(compiled, policy, request_for_resource(base, r)).permitted]


def _clinical_date(resource: Mapping[str, Any]) -> datetime | None:
    for element in _DATE_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, Mapping):
            value = value.get("start") or value.get("end")
        if isinstance(value, str):
            try:
                return parse_date_range(value)[0]
            except (ValueError, OverflowError):
                return None
    return None


def to_parameters(decision: Decision) -> dict[str, Any]:
    """The decision as a FHIR Parameters resource: decision, basis, reason, provisional, and one
    `deciding` part per consent that decided (reference with version, its effect, the provision)."""
    parameters: list[dict[str, Any]] = [
        {"name": "decision", "valueCode": decision.effect},
        {"name": "basis", "valueCode": decision.basis},
        {"name": "reason", "valueString": decision.reason},
        {"name": "provisional", "valueBoolean": decision.provisional},
    ]
    for decider in decision.deciding:
        parameters.append(
            {
                "name": "deciding",
                "part": [
                    {"name": "consent", "valueReference": {"reference": decider.reference}},
                    {"name": "effect", "valueCode": decider.effect},
                    {"name": "provision", "valueString": decider.provision},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": parameters}
