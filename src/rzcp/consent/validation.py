"""Checks on a Consent beyond the FHIR schema, before it is stored: what the engine needs to read it and
what the region's policy allows in it. Each failure is an `InvalidResource` naming the problem and the
element (a FHIRPath expression), which the error handler turns into an OperationOutcome.

The FHIR structure itself is checked at the edge by the FHIR models (rzcp.fhir.validation); this module
assumes a structurally valid R4 Consent and looks at meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from rzcp.auth.bsn import is_bsn_system, without_bsns
from rzcp.consent.compiled import (
    CUSTODIAN_ROLES,
    PARTICIPATION_SYSTEM,
    PRIVACY_SCOPE,
    RECIPIENT_ROLES,
    SCOPE_SYSTEM,
)
from rzcp.consent.policy import (
    PURPOSE_SYSTEM,
    R4_RESOURCE_TYPES,
    RESOURCE_TYPE_SYSTEM,
    URA_SYSTEM,
    Policy,
)
from rzcp.errors import InvalidResource
from rzcp.fhir.nodes import json_objects
from rzcp.fhir.search.values import parse_date_range

#: Who may be named as an organisation: a set of URAs or a callable answering "is this a member?".
KnownMembers = Collection[str] | Callable[[str], bool]

_STATUSES = frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})
_EARLIEST = datetime(1900, 1, 1)
_LATEST = datetime(2200, 12, 31)
_MAX_DEPTH = 5
_MAX_PROVISIONS = 200


def _fail(message: str, expression: str) -> InvalidResource:
    return InvalidResource(message, code="business-rule", expression=(expression,))


def validate_consent(resource: Mapping[str, Any], *, policy: Policy, known_members: KnownMembers) -> None:
    """Raise `InvalidResource` for the first problem found; return None when the Consent is fine."""
    is_member = known_members if callable(known_members) else known_members.__contains__
    if resource.get("resourceType") != "Consent":
        raise _fail("the resource must be a Consent", "resourceType")
    if resource.get("status") not in _STATUSES:
        raise _fail(f"status {resource.get('status')!r} is not a Consent status", "Consent.status")
    scope = (resource.get("scope") or {}).get("coding") or []
    if not any(c.get("system") == SCOPE_SYSTEM and c.get("code") == PRIVACY_SCOPE for c in scope):
        raise _fail(
            f"the gateway keeps privacy consents only: scope must be {SCOPE_SYSTEM}|{PRIVACY_SCOPE}",
            "Consent.scope",
        )
    reference = (resource.get("patient") or {}).get("reference") or ""
    if not reference.startswith("Patient/") or len(reference) <= len("Patient/"):
        raise _fail("a consent must name its patient as Patient/<id>", "Consent.patient")
    _check_no_other_person(resource, reference)
    if not (resource.get("policy") or resource.get("policyRule")):
        raise _fail("a consent needs a policy or a policyRule (R4 invariant ppc-1)", "Consent.policyRule")
    provision = resource.get("provision")
    if not isinstance(provision, Mapping):
        raise _fail("a consent needs a provision saying what it permits or refuses", "Consent.provision")
    if provision.get("type") not in ("permit", "deny"):
        raise _fail("the base provision must say permit or deny", "Consent.provision.type")
    counter = [0]
    _check_provision(provision, "Consent.provision", policy, is_member, None, 0, counter)


_PATIENT_ID = re.compile(r"(?:^|/)Patient/([^/]+)")
_NO_BSN = "a consent holds no BSN: its patient is Consent.patient, by the regional id"


def _check_no_other_person(resource: Mapping[str, Any], own: str) -> None:
    """A consent is its own patient's, who is named once, by the regional id (Consent.patient): it holds
    no BSN (stored nowhere in clear) and names no other Patient (found by security tests: a patient's
    consent naming another patient as performer and carrying her BSN, which tied the two together in
    every administrator's search; then the same in other spellings). So every string is looked at, not
    only identifiers under the BSN's system, and every reference as the receiver of a URL would read it."""
    own_id = own.removeprefix("Patient/")
    for path, node in json_objects(resource, "Consent"):
        if path == "Consent.patient":
            continue
        if node.get("resourceType") == "Patient" and path != "Consent":
            raise _fail("a consent contains no Patient: its patient is Consent.patient", path)
        for key, value in node.items():
            if not isinstance(value, str):
                continue
            text = unquote(value)
            where = f"{path}.{key}"
            if (key == "system" and is_bsn_system(text.rstrip("."))) or without_bsns(text) != text:
                raise _fail(
                    "a consent holds no BSN: its patient is Consent.patient, by the regional id", where
                )
            if key == "reference" and _names_another_patient(text, own_id):
                raise _fail("a consent names no other patient than its own", where)


def _names_another_patient(reference: str, own_id: str) -> bool:
    """`Patient/x`, absolute or with `/_history/..`, `/$op`, a query or a fragment after it: its id; a
    search (`Patient?identifier=..`) could be anyone, so it counts as another patient."""
    target = reference.split("#", 1)[0]
    if re.search(r"(?:^|/)Patient\?", target):
        return True
    found = _PATIENT_ID.search(target.split("?", 1)[0])
    return found is not None and found.group(1) != own_id


def _check_provision(
    provision: Mapping[str, Any],
    path: str,
    policy: Policy,
    is_member: Callable[[str], bool],
    parent_period: tuple[datetime, datetime] | None,
    depth: int,
    counter: list[int],
) -> None:
    counter[0] += 1
    if counter[0] > _MAX_PROVISIONS:
        raise _fail(f"a consent may hold at most {_MAX_PROVISIONS} provisions", path)
    if depth > _MAX_DEPTH:
        raise _fail(f"provisions may be nested at most {_MAX_DEPTH} deep", path)
    if depth > 0 and provision.get("type") not in ("permit", "deny"):
        raise _fail("a nested provision (an exception) must say permit or deny", f"{path}.type")
    period = _period(provision.get("period"), f"{path}.period")
    if (
        period is not None
        and parent_period is not None
        and not (parent_period[0] <= period[0] and period[1] <= parent_period[1])
    ):
        raise _fail(
            "an exception's period must lie within the period of the provision it is part of",
            f"{path}.period",
        )
    _period(provision.get("dataPeriod"), f"{path}.dataPeriod")
    for i, actor in enumerate(provision.get("actor") or []):
        _check_actor(actor, f"{path}.actor[{i}]", policy, is_member)
    for i, coding in enumerate(provision.get("purpose") or []):
        where = f"{path}.purpose[{i}]"
        if coding.get("system") != PURPOSE_SYSTEM:
            raise _fail(f"a purpose must be a code of {PURPOSE_SYSTEM}", where)
        if coding.get("code") not in policy.purposes:
            allowed = ", ".join(sorted(policy.purposes))
            raise _fail(
                f"purpose {coding.get('code')!r} is not allowed in this region (allowed: {allowed})", where
            )
    for i, coding in enumerate(provision.get("class") or []):
        where = f"{path}.class[{i}]"
        system, code = coding.get("system"), coding.get("code")
        if system == RESOURCE_TYPE_SYSTEM:
            if code not in R4_RESOURCE_TYPES:
                raise _fail(f"{code!r} is not an R4 resource type", where)
        elif f"{system}|{code}" not in policy.data_tokens:
            raise _fail(
                f"{system}|{code} is neither a data category of the region's policy nor a resource type",
                where,
            )
    for i, label in enumerate(provision.get("securityLabel") or []):
        if not label.get("system") or not label.get("code"):
            raise _fail("a security label needs a system and a code", f"{path}.securityLabel[{i}]")
    for i, concept in enumerate(provision.get("code") or []):
        codings = concept.get("coding") or []
        if not codings or any(not c.get("system") or not c.get("code") for c in codings):
            raise _fail("a code needs codings with a system and a code", f"{path}.code[{i}]")
    for i, child in enumerate(provision.get("provision") or []):
        _check_provision(
            child, f"{path}.provision[{i}]", policy, is_member, period or parent_period, depth + 1, counter
        )


def _check_actor(
    actor: Mapping[str, Any], path: str, policy: Policy, is_member: Callable[[str], bool]
) -> None:
    roles = (actor.get("role") or {}).get("coding") or []
    known_roles = RECIPIENT_ROLES | CUSTODIAN_ROLES
    if not any(r.get("system") == PARTICIPATION_SYSTEM and r.get("code") in known_roles for r in roles):
        raise _fail(
            f"an actor's role must be IRCP or PRCP (who receives the data) or CST (who holds it), "
            f"from {PARTICIPATION_SYSTEM}",
            f"{path}.role",
        )
    identifier = (actor.get("reference") or {}).get("identifier") or {}
    system, value = identifier.get("system"), identifier.get("value")
    where = f"{path}.reference.identifier"
    if not system or not value:
        raise _fail(
            "name an actor by identifier: a member's URA, or a category of the region's policy", where
        )
    if system == URA_SYSTEM:
        if not is_member(value):
            raise _fail(f"URA {value} is not a registered member of the region", where)
    elif system == policy.category_system:
        if value not in policy.organisation_categories:
            raise _fail(f"{value!r} is not an organisation category of the region's policy", where)
    elif system == policy.national_type_system:
        if not policy.is_known_category(value):
            raise _fail(f"organisation type {value!r} belongs to no category of the region's policy", where)
    else:
        raise _fail(
            f"an actor is a member ({URA_SYSTEM}) or a category ({policy.category_system}); not {system}",
            where,
        )


def _period(period: Mapping[str, Any] | None, path: str) -> tuple[datetime, datetime] | None:
    if not period:
        return None
    try:
        low = parse_date_range(period["start"])[0] if period.get("start") else None
        high = parse_date_range(period["end"])[1] if period.get("end") else None
    except (ValueError, TypeError, OverflowError):
        raise _fail("not a valid FHIR date or dateTime", path) from None
    for value, part in ((low, "start"), (high, "end")):
        if value is not None and not (_EARLIEST <= value <= _LATEST):
            raise _fail(f"the {part} lies outside the years 1900 to 2200", f"{path}.{part}")
    if low is not None and high is not None and high < low:
        raise _fail("the period ends before it starts", path)
    return (low or datetime.min, high or datetime.max)
