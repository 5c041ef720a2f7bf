"""What the FHIR router calls: plain async functions between HTTP and the consent domain.

Write path (a patient or an administrator writes a Consent), in the request's write transaction:

    resource = check_and_prepare_consent(body, patient_ref=..., policy=..., known_members=...)
    version = await store.create(resource)            # or update / delete
    await note_consent_change(conn, patient_ref, version.res_id)

Decision path (before a source is asked, and again per resource that comes back):

    (decision,) = await evaluate(conn, cache, policy, patient_ref, [request])
    kept = filter_resources(compiled, policy, request, resources)

`$evaluate` (a dry run for the patient app and administrators) answers `to_parameters(decision)`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.consent.cache import ConsentCache, note_consent_change, rules_for
from rzcp.consent.compiled import CompiledConsents, compile_consents
from rzcp.consent.engine import decide, naive_utc
from rzcp.consent.labels import label_token
from rzcp.consent.model import Decision, Request
from rzcp.consent.policy import Policy
from rzcp.consent.repository import current_consents, patient_reference
from rzcp.consent.validation import KnownMembers, validate_consent
from rzcp.errors import BadRequest
from rzcp.fhir.search.values import parse_date_range

__all__ = [
    "MalformedResource",
    "ResourceDecisions",
    "check_and_prepare_consent",
    "evaluate",
    "evaluate_draft",
    "filter_resources",
    "note_consent_change",
    "request_for_resource",
    "to_parameters",
    "to_results",
]

#: Where a resource's clinical date is, for Consent.provision.dataPeriod: the first element present.
_DATE_ELEMENTS = (
    "effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued", "authoredOn", "recordedDate",
    "occurrenceDateTime", "performedDateTime", "performedPeriod", "onsetDateTime", "whenHandedOver",
    "dateAsserted", "date", "period", "started", "created",
)  # fmt: skip
#: The elements whose codings are a resource's category and code tokens.
_CODE_ELEMENTS = ("category", "code", "type", "class")
#: Of those, the ones R4 defines as a primitive (a `code`, or a list of them) rather than a CodeableConcept
#: or Coding, per type, with the code system their required binding gives (None where no consent could
#: name them). A string there is a code, not a malformed concept: AllergyIntolerance.category is
#: `["food"]` in nearly every allergy (a new user's trial found every categorised allergy withheld).
#: tests/consent/test_resource_decisions.py checks this table against the R4 models.
PRIMITIVE_CODES: dict[str, dict[str, str | None]] = {
    "AllergyIntolerance": {
        "category": "http://hl7.org/fhir/allergy-intolerance-category",
        "type": "http://hl7.org/fhir/allergy-intolerance-type",
    },
    "Bundle": {"type": None},
    "CompartmentDefinition": {"code": None},
    "DeviceMetric": {"category": None},
    "Group": {"type": None},
    "MeasureReport": {"type": None},
    "MessageDefinition": {"category": None},
    "MolecularSequence": {"type": None},
    "OperationDefinition": {"code": None, "type": None},
    "ResearchElementDefinition": {"type": None},
    "SearchParameter": {"code": None, "type": None},
    "StructureDefinition": {"type": None},
}
_NO_PRIMITIVES: dict[str, str | None] = {}
_NO_TOKENS: frozenset[str] = frozenset()
#: Distinct resource keys one `ResourceDecisions` remembers: an answer has a handful; the bound only keeps
#: an odd source (a code per resource, each named by a consent) from growing it without end.
_MEMO_LIMIT = 1024


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
    conn: AsyncConnection, cache: ConsentCache, policy: Policy, patient_ref: str, requests: Sequence[Request]
) -> list[Decision]:
    """The decision for each request about the patient, from their current compiled consents (read once:
    the patient app asks about every kind of data at once)."""
    compiled = await rules_for(conn, cache, patient_ref)
    return [decide(compiled, policy, request) for request in requests]


#: The id a draft without one is decided under (it names the draft in the decision's deciding consents).
DRAFT_ID = "draft"


async def evaluate_draft(
    conn: AsyncConnection,
    policy: Policy,
    patient_ref: str,
    requests: Sequence[Request],
    draft: Mapping[str, Any],
    *,
    known_members: KnownMembers,
) -> list[Decision]:
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
    compiled = compile_consents([*others, prepared])
    return [decide(compiled, policy, request) for request in requests]


def request_for_resource(
    base: Request, resource: Mapping[str, Any], extra_labels: frozenset[str] = frozenset()
) -> Request:
    """The request about one resource that came back: its type, category and code tokens, security
    labels (with `extra_labels`: those of what it contains, `contained_parts`) and clinical date, on top
    of who asks and why."""
    return base.about(
        resource_type=resource.get("resourceType", base.resource_type),
        codes=_code_tokens(resource, None),
        labels=_labels(resource) | extra_labels,
        data_moment=_clinical_date(resource),
    )


class MalformedResource(BadRequest):
    """A resource whose codes or security labels are not FHIR's shape (a coding that is not a list of
    objects, say). Never decided on a guess: a coding that cannot be read may be the one a refusal or a
    sensitive label names. A pull withholds such a resource; a pushed message carrying one is refused."""


def contained_parts(
    policy: Policy, resource: Mapping[str, Any]
) -> tuple[list[Mapping[str, Any]], frozenset[str]]:
    """What a resource contains, as consent decides it: (the contained resources decided on their own,
    the security labels of every contained resource, which count for the container).

    A contained resource is other data when its type is covered by some data category of the policy and
    by none that covers the container's type: a Condition in a MedicationRequest is the patient's diagnosis
    (a security test got a PSY one through a pharmacy's medication pull), decided as a Condition. One of
    the container's own kind of data (a Medication in a MedicationRequest, an Observation in a
    DiagnosticReport) or of no category's (a Location, a Device, a Substance, a Practitioner) goes with its
    container (a review found those withholding valid prescriptions and encounters); a sensitive label on
    it marks the container. MalformedResource for what cannot be decided: `contained` not a list of
    resources, or a contained resource that contains again or is a Bundle (R4's dom-2)."""
    contained = resource.get("contained")
    if not contained:
        return [], _NO_TOKENS
    if not isinstance(contained, list):
        raise MalformedResource("contained is not a list of resources", expression=("contained",))
    own_categories = policy.data_categories_of_type(str(resource.get("resourceType")))
    decided: list[Mapping[str, Any]] = []
    labels: set[str] = set()
    for i, inner in enumerate(contained):
        where = (f"contained[{i}]",)
        if not isinstance(inner, Mapping) or not isinstance(inner.get("resourceType"), str):
            raise MalformedResource("a contained resource is an object with a resourceType", expression=where)
        if inner.get("contained") or inner["resourceType"] == "Bundle":
            raise MalformedResource(
                "a contained resource contains nothing itself (R4 dom-2)", expression=where
            )
        labels |= _labels(inner)
        categories = policy.data_categories_of_type(inner["resourceType"])
        if categories and categories.isdisjoint(own_categories):
            decided.append(inner)
    return decided, frozenset(labels)


class ResourceDecisions:
    """Per-resource decisions for one source's answer, each equal to
    `decide(compiled, policy, request_for_resource(base, resource)).permitted`, but the engine runs once
    per distinct key.

    The resources of one answer mostly lead to the same decision, and deciding each afresh was the largest
    per-member cost of a pull. So the answer is remembered on what alone can change it: the type; of the
    resource's codes only those the policy's data categories ask for (for that type) and those the
    patient's provisions name; the security labels; and, only when a provision has a dataPeriod, which
    dataPeriods the clinical date falls in (otherwise the date is not even parsed). Everything else the
    engine reads (who asks, from whom, why, when, break-the-glass) is the same for every resource of `base`.
    """

    __slots__ = ("_base", "_compiled", "_memo", "_periods", "_policy", "_relevant", "unreadable")

    def __init__(self, compiled: CompiledConsents, policy: Policy, base: Request) -> None:
        self._compiled = compiled
        self._policy = policy
        self._base = base
        self._periods = compiled.data_periods
        self._relevant: dict[str, frozenset[str]] = {}
        self._memo: dict[tuple[Any, ...], bool] = {}
        #: Resources withheld because their codes or labels could not be read (for the audit's report).
        self.unreadable = 0

    def permits(self, resource: Mapping[str, Any]) -> bool:
        """Whether the patient's consents let this resource through to the requester, with what it contains
        (`contained_parts`); never for a resource whose codes or labels cannot be read
        (`MalformedResource`)."""
        if not resource.get("contained"):
            return self._permits_one(resource, _NO_TOKENS)
        try:
            own, labels = contained_parts(self._policy, resource)
        except MalformedResource:
            self.unreadable += 1
            return False
        return self._permits_one(resource, labels) and all(self._permits_one(r, _NO_TOKENS) for r in own)

    def _permits_one(self, resource: Mapping[str, Any], extra_labels: frozenset[str]) -> bool:
        resource_type = resource.get("resourceType", self._base.resource_type)
        relevant = self._relevant.get(resource_type)
        if relevant is None:
            relevant = self._relevant_codes(resource_type)
        try:
            # walked even when no code can matter: a malformed one must be seen
            codes = _code_tokens(resource, relevant)
            labels = _labels(resource) | extra_labels if extra_labels else _labels(resource)
        except MalformedResource:
            self.unreadable += 1
            return False
        moment = _clinical_date(resource) if self._periods else None
        key = (resource_type, codes, labels, self._date_key(moment))
        permitted = self._memo.get(key)
        if permitted is None:
            request = self._base.about(
                resource_type=resource_type, codes=codes, labels=labels, data_moment=moment
            )
            permitted = decide(self._compiled, self._policy, request).permitted
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[key] = permitted
        return permitted

    def _relevant_codes(self, resource_type: str) -> frozenset[str]:
        found = self._policy.category_tokens_for(resource_type) | self._compiled.code_tokens
        self._relevant[resource_type] = found
        return found

    def _date_key(self, moment: datetime | None) -> tuple[bool, ...] | None:
        """The engine compares the date only with the dataPeriods: two dates inside the same ones decide
        alike. None (no date) is kept apart: the engine then assumes in favour of permission."""
        if moment is None:
            return None
        moment = naive_utc(moment)
        return tuple(low <= moment <= high for low, high in self._periods)


def filter_resources(
    compiled: CompiledConsents, policy: Policy, base: Request, resources: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The resources of a permitted source that the patient's consents let through, one by one (so a
    source can still withhold its sensitive entries)."""
    permits = ResourceDecisions(compiled, policy, base).permits
    return [r for r in resources if permits(r)]


def _code_tokens(resource: Mapping[str, Any], within: frozenset[str] | None) -> frozenset[str]:
    """The resource's category and code tokens (`system|code`), only those in `within` when given.
    Called per resource of every answer: plain loops, and a dict checked before the slower Mapping.
    Raises MalformedResource where an element is not what R4 makes it: a CodeableConcept or a Coding (or
    a list of them), or for the elements of `PRIMITIVE_CODES` a code (or a list of them)."""
    found: set[str] = set()
    primitives = PRIMITIVE_CODES.get(resource.get("resourceType"), _NO_PRIMITIVES)  # type: ignore[arg-type]
    for element in _CODE_ELEMENTS:
        value = resource.get(element)
        if value is None:
            continue
        concepts = value if isinstance(value, list) else [value]
        for concept in concepts:
            if isinstance(concept, (dict, Mapping)):
                codings = concept.get("coding")
                if codings is None:
                    codings = [concept] if "code" in concept else ()  # a Coding (Encounter.class)
                elif not isinstance(codings, list):
                    raise MalformedResource(f"{element}.coding is not a list", expression=(element,))
            elif element in primitives and (
                isinstance(concept, str) or (isinstance(concept, bool) and primitives[element] is None)
            ):  # a code (a boolean only where no consent names it: OperationDefinition.type)
                system = primitives[element]
                if system is not None and concept:
                    token = f"{system}|{concept}"
                    if within is None or token in within:
                        found.add(token)
                continue
            else:
                raise MalformedResource(f"{element} is not a CodeableConcept", expression=(element,))
            for coding in codings:
                if not isinstance(coding, (dict, Mapping)):
                    raise MalformedResource(f"{element}.coding has an entry that is not a Coding")
                system, code = coding.get("system"), coding.get("code")
                if not isinstance(system, str | None) or not isinstance(code, str | None):
                    # `"code": ["123"]` would make a token no refusal names (a review found it)
                    raise MalformedResource(f"{element}.coding has a system or code that is not a string")
                if system and code:
                    token = f"{system}|{code}"
                    if within is None or token in within:
                        found.add(token)
    return frozenset(found) if found else _NO_TOKENS


def _labels(resource: Mapping[str, Any]) -> frozenset[str]:
    meta = resource.get("meta")
    if meta is None:
        return _NO_TOKENS
    if not isinstance(meta, (dict, Mapping)):
        raise MalformedResource("meta is not an object", expression=("meta",))
    security = meta.get("security")
    if not security:
        return _NO_TOKENS
    if not isinstance(security, list) or not all(isinstance(s, (dict, Mapping)) for s in security):
        raise MalformedResource("meta.security is not a list of Codings", expression=("meta.security",))
    return frozenset(label_token(s.get("system"), s["code"]) for s in security if s.get("code"))


def _clinical_date(resource: Mapping[str, Any]) -> datetime | None:
    for element in _DATE_ELEMENTS:
        value = resource.get(element)
        if value is None:  # most of the elements: skip the slow Mapping check
            continue
        if isinstance(value, (dict, Mapping)):
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
    return {"resourceType": "Parameters", "parameter": _decision_parameters(decision)}


def to_results(
    asked: Sequence[tuple[str, Sequence[str], Sequence[str]]], decisions: Sequence[Decision]
) -> dict[str, Any]:
    """Several decisions as one Parameters resource: a `result` per question, in the order asked, its parts
    the question's resourceType, codes and labels, then the decision's parameters as `to_parameters` gives
    them."""
    results = []
    for (resource_type, codes, labels), decision in zip(asked, decisions, strict=True):
        part = [{"name": "resourceType", "valueCode": resource_type}]
        part += [{"name": "code", "valueString": code} for code in codes]
        part += [{"name": "label", "valueString": label} for label in labels]
        results.append({"name": "result", "part": [*part, *_decision_parameters(decision)]})
    return {"resourceType": "Parameters", "parameter": results}


def _decision_parameters(decision: Decision) -> list[dict[str, Any]]:
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
    return parameters
