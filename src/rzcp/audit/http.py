"""Every request that touches patient data or the registry leaves one AuditEvent, written before the
response leaves the gateway: no audit record, no response.

`AuditMiddleware` wraps the FHIR API and the token and revocation (logout) endpoints. It holds the
response the app produced, records the AuditEvent (who from the Principal, what from the route and the
`AuditNote` the endpoint filled in, how it ended from the status), and only then sends the response on.
When the record cannot be written the caller gets a 503 OperationOutcome instead of the data. Requests
refused before anyone was authenticated (401) are recorded too, with no one as the actor.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rzcp.audit.events import Decision, Returned, facts_from_principal
from rzcp.audit.redact import recorded_query, recorded_reference
from rzcp.audit.writer import AuditUnavailable

log = logging.getLogger("rzcp.audit")

#: Paths that are about neither patient data nor the registry: discovery documents.
_NOT_AUDITED = ("/fhir/metadata", "/fhir/.well-known/")
_AUDITED = ("/fhir", "/auth/token", "/auth/revoke")

_PATIENT_PARAMS = ("patient", "subject", "beneficiary")
_PATIENT_KEYS = tuple(f'"{name}"' for name in _PATIENT_PARAMS)
#: What a request's path may give the record as a resource type or an operation's name; anything else in
#: the path (a BSN, say) is not recorded from there.
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_OPERATION_NAME = re.compile(r"[A-Za-z][A-Za-z-]{0,63}")


@dataclass
class AuditNote:
    """What the endpoint knows that the route does not tell: whom it was about, what went out, why."""

    patient: str | None = None
    returned: list[Returned] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    operation: str | None = None
    outcome_desc: str | None = None
    member_name: str | None = None

    def about(self, resource: dict[str, Any]) -> None:
        """Take the patient from a resource read or written (the Patient itself, or its patient/subject)."""
        if self.patient is None:
            self.patient = patient_of(resource)

    def about_stored(self, res_type: str, res_id: str, content: str) -> None:
        """`about` for a stored resource's JSON text, parsed only when it can name a patient."""
        if self.patient is None:
            if res_type == "Patient":
                self.patient = f"Patient/{res_id}"
            elif any(key in content for key in _PATIENT_KEYS):
                self.patient = patient_of(orjson.loads(content))

    def sent(self, resource_type: str, count: int, source: str | None = None) -> None:
        if count:
            self.returned.append(Returned(resource_type, count, source))


def patient_of(resource: dict[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        return f"Patient/{resource['id']}"
    for element in _PATIENT_PARAMS:
        value = resource.get(element)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference
    return None


def note(scope_or_request: Any) -> AuditNote:
    """The request's AuditNote (a fresh one outside an audited request, so endpoints never need to care)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    state = scope.setdefault("state", {})
    found = state.get("audit_note")
    if found is None:
        found = state["audit_note"] = AuditNote()
    return found


def _audited(path: str) -> bool:
    return path.startswith(_AUDITED) and not path.startswith(_NOT_AUDITED)


_INTERACTION = {
    ("GET", "/fhir/{type}"): "search-type",
    ("POST", "/fhir/{type}/_search"): "search-type",
    ("POST", "/fhir/{type}"): "create",
    ("GET", "/fhir/{type}/{id}"): "read",
    ("PUT", "/fhir/{type}/{id}"): "update",
    ("DELETE", "/fhir/{type}/{id}"): "delete",
    ("GET", "/fhir/{type}/{id}/_history/{vid}"): "vread",
    ("GET", "/fhir/{type}/{id}/_history"): "history-instance",
    ("GET", "/fhir/{type}/_history"): "history-type",
    ("GET", "/fhir/AuditEvent"): "search-type",
}


#: The exchange's own routes for one type: its pulls.
_TYPE_ROUTE = re.compile(r"/fhir/[A-Z][A-Za-z]+")


def _interaction(method: str, route: str | None, path: str) -> tuple[str, str | None]:
    """(restful interaction, operation name) of the request."""
    if route is not None and (method, route) in _INTERACTION:
        return _INTERACTION[(method, route)], None
    if method == "GET" and route is not None and _TYPE_ROUTE.fullmatch(route):
        return "search-type", None  # a pull (`GET /fhir/Condition`), also when refused before it ran
    if "$" in path:
        name, _, rest = path.rsplit("$", 1)[1].partition("/")
        if not _OPERATION_NAME.fullmatch(name):
            return "operation", None
        if method == "GET" and rest:  # `GET $process-message/<id>`: reading a message's status
            return "read", f"{name}-status"
        return "operation", name
    if path.startswith("/auth/token"):
        return "operation", "token"
    if path.startswith("/auth/revoke"):
        return "operation", "logout"
    return {"GET": "read", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(
        method, "operation"
    ), None


def _patient_from_request(scope: Scope, params: dict[str, str]) -> str | None:
    path_params = scope.get("path_params", {})
    if path_params.get("type") == "Patient" and path_params.get("id"):
        return f"Patient/{path_params['id']}"
    for name in _PATIENT_PARAMS:
        value = params.get(name)
        if value:
            return value if "/" in value else f"Patient/{value}"
    return None


#: The token endpoint, whose clients read OAuth errors, not OperationOutcomes.
TOKEN_PATH = "/auth/token"  # noqa: S105 (a path, not a secret)


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _audited(scope["path"]):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        status = 500
        try:
            await self.app(scope, receive, hold)
            status = next((m["status"] for m in held if m["type"] == "http.response.start"), 500)
        finally:
            # An exception still gets its record (status 500) before the error handler answers.
            recorded = await self._record(scope, status)
        if not recorded:
            await _send_unavailable(send, scope["path"])
            return
        for message in held:
            await send(message)

    async def _record(self, scope: Scope, status: int) -> bool:
        runtime = scope["app"].state.runtime
        state = scope.get("state", {})
        principal = state.get("principal")
        audit_note = note(scope)
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        route = getattr(scope.get("route"), "path", None)
        interaction, operation = _interaction(scope["method"], route, scope["path"])
        path_params = scope.get("path_params", {})
        res_type = _resource_type(scope)
        target = (
            recorded_reference(f"{res_type}/{path_params['id']}")
            if res_type and path_params.get("id")
            else None
        )
        client = scope.get("client")
        facts = facts_from_principal(
            principal,
            interaction=interaction,
            status=status,
            correlation_id=state.get("request_id", ""),
            resource_type=res_type,
            target=target,
            query=recorded_query(scope.get("query_string", b"").decode("latin-1")) or None,
            operation=audit_note.operation or operation,
            address=client[0] if client else None,
            returned=tuple(audit_note.returned),
            decisions=tuple(audit_note.decisions),
            outcome_desc=audit_note.outcome_desc,
            member_name=audit_note.member_name,
            **_patient_fact(principal, _regional(audit_note.patient or _patient_from_request(scope, params))),
        )
        try:
            await runtime.audit.record(facts)
        except AuditUnavailable:
            log.error(
                "audit record could not be written; the response was withheld (request %s)",
                facts.correlation_id,
            )
            return False
        return True


def _patient_fact(principal: Any, patient: str | None) -> dict[str, str]:
    """A patient token's own patient is set by facts_from_principal; anything else is passed explicitly."""
    if patient is None or (principal is not None and getattr(principal, "is_patient", False)):
        return {}
    return {"patient": patient}


def _regional(patient: str | None) -> str | None:
    """The patient as the record names it; none when the request named them by what may be a BSN
    (`patient=999967551`, `Patient/999967551/$everything`): that is no regional id, and is not kept."""
    return patient if patient is None or recorded_reference(patient) == patient else None


def _resource_type(scope: Scope) -> str | None:
    """The type asked for, from the route or else the path; only what can be a type's name, as a request
    for `/fhir/<anything>` is recorded too."""
    named = scope.get("path_params", {}).get("type")
    if named is None:
        parts = [p for p in scope["path"].split("/") if p]
        named = parts[1] if len(parts) >= 2 and parts[0] == "fhir" else None
    return named if named is not None and _TYPE_NAME.fullmatch(named) else None


async def _send_unavailable(send: Send, path: str) -> None:
    """The 503 of a request whose record could not be written: an OAuth error at the token endpoint,
    whose clients read `error` (RFC 6749, section 5.2), and an OperationOutcome elsewhere."""
    said = "The audit trail cannot be written; no data is sent without a record. Retry later."
    if path == TOKEN_PATH:
        body = orjson.dumps({"error": "temporarily_unavailable", "error_description": said})
        media = b"application/json"
    else:
        issue = {"severity": "error", "code": "transient", "diagnostics": said}
        body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})
        media = b"application/fhir+json; charset=utf-8"
    headers = [(b"content-type", media), (b"retry-after", b"5"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
