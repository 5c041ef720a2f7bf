"""The normative decision cases of consent/cases/: a compact form a privacy officer can read, turned
into real FHIR R4 Consent resources and a typed `Request`.

One case per YAML file:

    title: Een huisarts mag medicatie zien als de patiënt huisartsen toestemming gaf
    policy: {emergency: {enabled: true}}      # optional: changes to the region's policy for this case
    consents:
      - id: gp-medication                     # becomes Consent.id
        status: active                        # optional (active); also inactive, rejected, draft ...
        permit:                               # the base provision: permit or deny
          to: huisartsen                      # who receives: a category, or ura:00000123; or a list
          from: ura:00000001                  # who holds the data (custodian); same forms
          data: [medicatie]                   # data categories of the policy (keys)
          types: [Observation]                # resource types
          codes: ["http://loinc.org|718-7"]   # codes found in the resource
          labels: [PSY]                       # security labels (a sensitive label's code, or system|code)
          purpose: [TREAT]
          period: 2025-01-01 / 2025-12-31     # when the rule applies; either side may be left empty
          data_period: / 2024-12-31           # which data (its clinical date)
          except:                             # nested exceptions, each a permit: or deny: like above
            - deny: {data: [labuitslagen]}
    request:
      requester: {ura: "00000002", category: huisartsen}
      source: {ura: "00000001", category: ziekenhuizen-labs}
      purpose: TREAT
      resource: {type: MedicationRequest, codes: [...], labels: [PSY], date: 2024-05-01}
      at: 2025-06-01T10:00:00Z
    expect:
      decision: permit                        # or deny
      because: permitted                      # the decision's basis (rzcp.consent.model BASIS_*)
      deciding: [gp-medication]               # the consents that decided, if any
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from rzcp.consent.compiled import PARTICIPATION_SYSTEM, PRIVACY_SCOPE, SCOPE_SYSTEM
from rzcp.consent.labels import label_token
from rzcp.consent.model import Request
from rzcp.consent.policy import PURPOSE_SYSTEM, RESOURCE_TYPE_SYSTEM, URA_SYSTEM, Policy, parse_policy

CASES_DIR = Path(__file__).resolve().parents[3] / "consent" / "cases"
PATIENT = "Patient/case-patient"
_PROVISION_KEYS = frozenset(
    {"to", "from", "data", "types", "codes", "labels", "purpose", "period", "data_period", "except"}
)


class CaseError(ValueError):
    pass


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    policy: Policy
    consents: list[dict[str, Any]]
    request: Request
    decision: str
    because: str
    deciding: tuple[str, ...] | None
    provisional: bool | None


def load_cases(directory: Path = CASES_DIR, *, policy_data: dict[str, Any]) -> list[Case]:
    return [load_case(path, policy_data=policy_data) for path in sorted(directory.glob("*.yaml"))]


def load_case(path: Path, *, policy_data: dict[str, Any]) -> Case:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        policy = parse_policy(_merge(copy.deepcopy(policy_data), data.get("policy") or {}), source=path.name)
        consents = [consent_from_compact(c, policy) for c in data.get("consents") or []]
        request = request_from_compact(data["request"], policy)
        expect = data["expect"]
        deciding = expect.get("deciding")
        return Case(
            name=path.stem,
            title=data["title"],
            policy=policy,
            consents=consents,
            request=request,
            decision=expect["decision"],
            because=expect["because"],
            deciding=tuple(deciding) if deciding is not None else None,
            provisional=expect.get("provisional"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CaseError(f"{path.name}: {exc}") from exc


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


# --- consents -------------------------------------------------------------------------------------------


def consent_from_compact(
    compact: dict[str, Any], policy: Policy, *, patient: str = PATIENT
) -> dict[str, Any]:
    """A FHIR R4 Consent (scope patient-privacy) from the compact form."""
    effect = "permit" if "permit" in compact else "deny" if "deny" in compact else None
    if effect is None:
        raise CaseError(f"consent {compact.get('id')!r} needs permit: or deny:")
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "id": str(compact["id"]),
        "meta": {"versionId": str(compact.get("version", 1))},
        "status": compact.get("status", "active"),
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": PRIVACY_SCOPE}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient},
        "dateTime": compact.get("recorded", "2025-01-01T00:00:00Z"),
        "policyRule": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "OPTIN" if effect == "permit" else "OPTOUT",
                }
            ]
        },
        "provision": _provision(effect, compact[effect] or {}, policy),
    }
    return consent


def _provision(effect: str, compact: dict[str, Any], policy: Policy) -> dict[str, Any]:
    unknown = set(compact) - _PROVISION_KEYS
    if unknown:
        raise CaseError(f"unknown provision field(s): {', '.join(sorted(unknown))}")
    provision: dict[str, Any] = {"type": effect}
    if compact.get("period"):
        provision["period"] = _period(compact["period"])
    actors = [
        *(_actor(who, "IRCP", policy) for who in _list(compact.get("to"))),
        *(_actor(who, "CST", policy) for who in _list(compact.get("from"))),
    ]
    if actors:
        provision["actor"] = actors
    if compact.get("purpose"):
        provision["purpose"] = [{"system": PURPOSE_SYSTEM, "code": p} for p in _list(compact["purpose"])]
    classes = [_split(policy.token_by_key.get(k, k)) for k in _list(compact.get("data"))]
    classes += [{"system": RESOURCE_TYPE_SYSTEM, "code": t} for t in _list(compact.get("types"))]
    if classes:
        provision["class"] = classes
    if compact.get("labels"):
        provision["securityLabel"] = [_split(_label(x, policy)) for x in _list(compact["labels"])]
    if compact.get("codes"):
        provision["code"] = [{"coding": [_split(c)]} for c in _list(compact["codes"])]
    if compact.get("data_period"):
        provision["dataPeriod"] = _period(compact["data_period"])
    nested = []
    for exception in _list(compact.get("except")):
        inner = "permit" if "permit" in exception else "deny"
        nested.append(_provision(inner, exception[inner] or {}, policy))
    if nested:
        provision["provision"] = nested
    return provision


def _actor(who: str, role: str, policy: Policy) -> dict[str, Any]:
    who = str(who)
    if who.startswith("ura:"):
        identifier = {"system": URA_SYSTEM, "value": who.removeprefix("ura:")}
        kind = "Organization"
    elif who in policy.organisation_categories:
        identifier = {"system": policy.category_system, "value": who}
        kind = "Group"
    else:
        identifier = {"system": policy.national_type_system, "value": who}
        kind = "Group"
    return {
        "role": {"coding": [{"system": PARTICIPATION_SYSTEM, "code": role}]},
        "reference": {"type": kind, "identifier": identifier},
    }


def _label(value: str, policy: Policy) -> str:
    if "|" in value:
        system, _, code = value.rpartition("|")
        return label_token(system, code)  # as the gateway reads a label on data or in a consent
    for token in policy.sensitive_labels:
        if token.rsplit("|", 1)[1] == value:
            return token
    raise CaseError(f"label {value!r} is not a sensitive label of the policy; write it as system|code")


def _split(token: str) -> dict[str, str]:
    system, sep, code = str(token).rpartition("|")
    if not sep:
        raise CaseError(f"{token!r} is not system|code (nor a key of the policy)")
    return {"system": system, "code": code}


def _period(text: str) -> dict[str, str]:
    start, sep, end = str(text).partition("/")
    if not sep:
        raise CaseError(f"period {text!r} must be 'start / end'")
    period = {}
    if start.strip():
        period["start"] = start.strip()
    if end.strip():
        period["end"] = end.strip()
    return period


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# --- requests -------------------------------------------------------------------------------------------


def request_from_compact(compact: dict[str, Any], policy: Policy) -> Request:
    requester = compact["requester"]
    source = compact.get("source") or {}
    resource = compact["resource"]
    known = resource.get("known", True)
    return Request(
        requester_ura=str(requester["ura"]),
        requester_category=requester.get("category"),
        source_ura=str(source["ura"]) if source.get("ura") else None,
        source_category=source.get("category"),
        purpose=compact.get("purpose", "TREAT"),
        moment=_moment(compact["at"]),
        resource_type=resource["type"],
        codes=frozenset(_list(resource.get("codes"))) if known else None,
        labels=frozenset(_label(x, policy) for x in _list(resource.get("labels"))) if known else None,
        data_moment=_moment(resource["date"]) if resource.get("date") else None,
        break_glass_since=_moment(compact["break_glass_since"]) if compact.get("break_glass_since") else None,
    )


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
