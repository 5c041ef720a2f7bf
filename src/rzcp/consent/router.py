"""`POST /fhir/Consent/$evaluate`: the consent engine as a dry run. The patient app asks "what would my GP
see?"; an administrator checks a complaint. Nothing is shared by it: it answers with the decision, its
basis, the deciding consents and the reason, as a Parameters resource.

`GET /consent/policy`: the region's policy as plain JSON for apps that let a patient write consents (which
categories of organisations and of data exist, which purposes, whether break-the-glass is on). It is public
policy, readable without a token, and outside /fhir because it is not a FHIR resource."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from rzcp.audit.http import note as audit_note
from rzcp.auth.access import authorize_interaction
from rzcp.auth.deps import CurrentPrincipal
from rzcp.auth.registry import ensure_live, list_members
from rzcp.consent.compiled import PARTICIPATION_SYSTEM, PRIVACY_SCOPE, SCOPE_SYSTEM
from rzcp.consent.model import Request as ConsentRequest
from rzcp.consent.policy import PURPOSE_SYSTEM, RESOURCE_TYPE_SYSTEM, URA_SYSTEM
from rzcp.consent.service import evaluate, evaluate_draft, to_parameters, to_results
from rzcp.errors import BadRequest, Forbidden
from rzcp.fhir.deps import RuntimeDep, is_fhir_id
from rzcp.fhir.operations import post_only
from rzcp.fhir.search.values import parse_date_range
from rzcp.fhir.validation import validate_resource
from rzcp.fhir.wire import FHIR_JSON, check_accept, read_json_body

router = APIRouter(tags=["Consent"])

_VALUE_KEYS = ("valueString", "valueCode", "valueDateTime", "valueInstant", "valueUri", "valueId")
#: The parameters $evaluate reads. Any other name is refused: ignored, a misspelt `requester` made a
#: question about nobody, answered "deny" as if that were the patient's choice (an integrator's trial).
PARAMETERS = (
    "patient", "requester", "requesterCategory", "source", "sourceCategory", "purpose", "resourceType",
    "code", "label", "moment", "draft", "question",
)  # fmt: skip
#: What one `question` (one kind of data) holds: the patient app asks about every kind at once, and one
#: call (one audit record) per kind flooded the trail with a dozen records per tap of a preview.
QUESTION_PARTS = ("resourceType", "code", "label")
MAX_QUESTIONS = 50


def _values(
    parameters: Any,
) -> tuple[dict[str, list[str]], dict[str, Any] | None, list[dict[str, list[str]]]]:
    """The string-valued parameters by name, the `draft` Consent (a `resource` part) if given, and the
    `question`s (each its parts by name). The body is any JSON: a number or null was a 500 (found by
    schemathesis once the body was declared)."""
    if (
        not isinstance(parameters, dict)
        or parameters.get("resourceType") != "Parameters"
        or not isinstance(parameters.get("parameter"), list)
    ):
        raise BadRequest(
            "$evaluate takes a Parameters resource with a parameter list: " + ", ".join(PARAMETERS),
            code="structure",
        )
    found: dict[str, list[str]] = {}
    draft: dict[str, Any] | None = None
    questions: list[dict[str, list[str]]] = []
    for parameter in parameters["parameter"]:
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise BadRequest("each parameter needs a name", code="structure")
        if parameter["name"] not in PARAMETERS:
            raise BadRequest(
                f"$evaluate has no parameter {parameter['name'][:64]!r}; it reads " + ", ".join(PARAMETERS),
                code="not-supported",
            )
        if parameter["name"] == "question":
            questions.append(_question(parameter))
            continue
        if parameter["name"] == "draft":
            resource = parameter.get("resource")
            if (
                draft is not None
                or not isinstance(resource, dict)
                or resource.get("resourceType") != "Consent"
            ):
                raise BadRequest("draft is one Consent, given as the parameter's resource", code="value")
            draft = resource
            continue
        found.setdefault(parameter["name"], []).append(_string_value(parameter))
    if questions and any(name in found for name in QUESTION_PARTS):
        raise BadRequest("ask either one question (resourceType ...) or several (question)", code="structure")
    if len(questions) > MAX_QUESTIONS:
        raise BadRequest(f"at most {MAX_QUESTIONS} questions at once", code="too-costly")
    return found, draft, questions


def _string_value(parameter: dict[str, Any]) -> str:
    value = next((parameter[k] for k in _VALUE_KEYS if isinstance(parameter.get(k), str)), None)
    reference = parameter.get("valueReference")
    if value is None and isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        value = reference["reference"]
    if value is None:
        name = parameter["name"]
        raise BadRequest(f"parameter {name!r} needs a string, code or reference value", code="value")
    return value


def _question(parameter: dict[str, Any]) -> dict[str, list[str]]:
    """One `question`: its parts (resourceType once, code and label any number of times) by name."""
    parts = parameter.get("part")
    if not isinstance(parts, list):
        raise BadRequest("a question has parts: resourceType, code, label", code="structure")
    found: dict[str, list[str]] = {}
    for part in parts:
        if not isinstance(part, dict) or part.get("name") not in QUESTION_PARTS:
            raise BadRequest("a question's parts are resourceType, code and label", code="structure")
        found.setdefault(part["name"], []).append(_string_value(part))
    return found


def _one(values: dict[str, list[str]], name: str, *, required: bool = True) -> str | None:
    given = values.get(name, [])
    if len(given) > 1:
        raise BadRequest(f"parameter {name!r} is given more than once", code="value")
    if not given and required:
        raise BadRequest(f"parameter {name!r} is required", code="required")
    return given[0] if given else None


def _kind_of_data(
    question: dict[str, list[str]], runtime: Any
) -> tuple[str, frozenset[str] | None, frozenset[str]]:
    """(resourceType, codes or None, labels) of one question; a type R4 does not have is a 400."""
    resource_type = _one(question, "resourceType") or ""
    if resource_type not in runtime.registry.resource_types():
        raise BadRequest(f"resourceType {resource_type[:64]!r} is not an R4 resource type", code="value")
    codes = frozenset(question["code"]) if "code" in question else None
    return resource_type, codes, frozenset(question.get("label", ()))


def _known_terms(values: dict[str, list[str]], runtime: Any) -> None:
    """A question in terms the region does not know is a mistake to hear about, not a "deny": a
    resourceType `Foo` was answered deny as if the patient had refused it (a user's trial)."""
    policy = runtime.policy
    for name in ("requesterCategory", "sourceCategory"):
        category = _one(values, name, required=False)
        if category is not None and not policy.knows_category(category):
            raise BadRequest(
                f"{name} {category[:64]!r} is not one of the region's organisation categories "
                "(GET /consent/policy)",
                code="value",
            )
    purpose = _one(values, "purpose", required=False)
    if purpose is not None and purpose not in policy.purposes:
        raise BadRequest(
            f"purpose {purpose[:64]!r} is not one the region allows: " + ", ".join(sorted(policy.purposes)),
            code="value",
        )


@router.post("/fhir/Consent/$evaluate", responses={200: {"content": {"application/fhir+json": {}}}})
async def evaluate_consent(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """Parameters in: patient, requester (URA) and/or requesterCategory, source (URA) and/or
    sourceCategory, purpose (default TREAT), resourceType, code and label (repeatable `system|code`
    tokens), moment (default now). A patient's token evaluates their own consents only. Several kinds of
    data at once: a `question` each (parts resourceType, code, label), answered by a `result` each.

    `draft` (a Consent in `resource`) answers "what if": the decision as if that consent were saved, beside
    the patient's others (replacing the one with its id; `status: inactive` previews a revocation). It is
    checked as a write would be, and nothing is stored."""
    check_accept(request)
    authorize_interaction(principal, "Consent", "read", runtime.registry)
    async with runtime.db.query() as conn:  # a revoked client hears 401 before anything about its body
        await ensure_live(conn, principal)
    values, draft, questions = _values(await read_json_body(request, runtime.settings.max_body_bytes))
    if draft is not None:
        # the structure first, as a write's: a security test found `actor: [{"role": "x"}]` a 500 here
        draft = validate_resource(draft, expected_type="Consent")
    if principal.is_patient:
        patient = f"Patient/{principal.patient_id}"
        asked = _one(values, "patient", required=False)
        if asked is not None and asked != patient:
            raise Forbidden("a patient evaluates their own consents only")
    else:
        patient = _one(values, "patient") or ""
        if not (patient.startswith("Patient/") and is_fhir_id(patient.removeprefix("Patient/"))):
            # `Patient/../../x` was answered deny, as if about someone (a probe's)
            raise BadRequest("patient must be a reference Patient/<id>", code="value")
    audit_note(request).patient = patient
    async with runtime.db.query() as conn:
        categories = {m.ura: m.category for m in await list_members(conn)}
        requester = _one(values, "requester", required=False)
        source = _one(values, "source", required=False)
        for name, ura in (("requester", requester), ("source", source)):
            if ura is not None and ura not in categories:
                raise BadRequest(f"{name} {ura[:64]!r} is not the URA of a registered member", code="value")
        if requester is None and _one(values, "requesterCategory", required=False) is None:
            raise BadRequest("name the requester (a member's URA) or a requesterCategory", code="required")
        _known_terms(values, runtime)
        asked = [_kind_of_data(q, runtime) for q in questions or [values]]
        moment_text = _one(values, "moment", required=False)
        try:
            moment = (
                parse_date_range(moment_text)[0] if moment_text else datetime.now(UTC).replace(tzinfo=None)
            )
        except ValueError:
            raise BadRequest("moment is not a FHIR dateTime", code="value") from None
        base = ConsentRequest(
            requester_ura=requester or "",
            requester_category=_one(values, "requesterCategory", required=False)
            or categories.get(requester or ""),
            source_ura=source,
            source_category=_one(values, "sourceCategory", required=False) or categories.get(source or ""),
            purpose=_one(values, "purpose", required=False) or "TREAT",
            moment=moment,
            resource_type="",
        )
        requests = [
            base.about(resource_type=kind, codes=codes, labels=labels) for kind, codes, labels in asked
        ]
        if draft is None:
            decisions = await evaluate(conn, runtime.consents, runtime.policy, patient, requests)
        else:
            decisions = await evaluate_draft(
                conn, runtime.policy, patient, requests, draft, known_members=categories.keys()
            )
    if not questions:
        return Response(orjson.dumps(to_parameters(decisions[0])), media_type=FHIR_JSON)
    shown = [(kind, sorted(codes or ()), sorted(labels)) for kind, codes, labels in asked]
    return Response(orjson.dumps(to_results(shown, decisions)), media_type=FHIR_JSON)


post_only(router, "/fhir/Consent/$evaluate")


@router.get("/consent/policy", responses={200: {"content": {"application/json": {}}}})
async def public_policy(runtime: RuntimeDep) -> Response:
    """The policy document as validated at start-up, with the code systems a Consent written against it
    uses, so an app builds valid consents without hard-coding the region's choices."""
    body = runtime.policy.document.model_dump(mode="json")
    body["systems"] = {
        "organisation_category": runtime.policy.category_system,
        "organisation": URA_SYSTEM,
        "purpose": PURPOSE_SYSTEM,
        "resource_type": RESOURCE_TYPE_SYSTEM,
        "participation": PARTICIPATION_SYSTEM,
        "scope": f"{SCOPE_SYSTEM}|{PRIVACY_SCOPE}",
    }
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"cache-control": "public, max-age=300"}
    )
