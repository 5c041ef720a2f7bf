"""The audit trail over HTTP: auditors search it as FHIR AuditEvents, a patient reads their own access log
in plain words. Reading the trail is itself recorded (AuditMiddleware). The trail is written only by the
gateway: a client's create, update or delete of an AuditEvent is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from rzcp.audit.search import patient_access_log, search_events
from rzcp.auth.access import authorize_interaction
from rzcp.auth.context import KNOWN_PURPOSES
from rzcp.auth.deps import CurrentPrincipal
from rzcp.auth.registry import is_ura
from rzcp.errors import BadRequest, Forbidden, MethodNotAllowed
from rzcp.fhir import bundles, paging
from rzcp.fhir.deps import RuntimeDep, check_live
from rzcp.fhir.interactions import page_size
from rzcp.fhir.search.values import parse_date_range
from rzcp.fhir.wire import FHIR_JSON, check_accept, render

router = APIRouter(prefix="/fhir", tags=["Audit"])

_TYPE = "AuditEvent"
_FILTERS = {"patient", "agent", "member", "client", "date", "purpose", "outcome", "emergency"}
_CONTROL = {"_count", paging.PAGE_PARAM, "_format", "_pretty"}


def _criteria(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """search_events' keyword arguments from AuditEvent search parameters; unknown ones are refused."""
    criteria: dict[str, Any] = {}
    for name, value in pairs:
        if name in _CONTROL:
            continue
        if name not in _FILTERS:
            raise BadRequest(
                f"AuditEvent search does not support {name!r}; use {', '.join(sorted(_FILTERS))}",
                code="not-supported",
            )
        if name == "date":
            prefix, moment = (
                (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt") else ("eq", value)
            )
            try:
                low, high = parse_date_range(moment)
            except ValueError:
                raise BadRequest(f"date={value!r} is not a FHIR date", code="value") from None
            if prefix in ("ge", "gt", "eq"):
                criteria["since"] = low if prefix != "gt" else high
            if prefix in ("le", "lt", "eq"):
                criteria["until"] = _after(high) if prefix != "lt" else low
        elif name == "emergency":
            if value not in ("true", "false"):
                raise BadRequest("emergency takes true or false", code="value")
            criteria["emergency"] = value == "true"
        else:
            _check_value(name, value)
            criteria[name] = value
    return criteria


#: AuditEvent.outcome's codes (success, minor failure, serious failure, major failure).
_OUTCOMES = ("0", "4", "8", "12")


def _check_value(name: str, value: str) -> None:
    """A value no record can hold is a 400, not an empty answer: `outcome=denied` or `purpose=TRAET`
    found nothing, and an auditor took that for "nothing happened" (a privacy officer's walkthrough)."""
    if name == "outcome" and value not in _OUTCOMES:
        raise BadRequest(f"outcome is an AuditEvent outcome code: {', '.join(_OUTCOMES)}", code="value")
    if name == "purpose" and value not in KNOWN_PURPOSES:
        raise BadRequest(f"purpose={value!r} is not a v3 PurposeOfUse code (TREAT, ETREAT ...)", code="value")
    if name == "member" and not is_ura(value):
        raise BadRequest("member is a URA: 8 digits", code="value")


def _after(moment: datetime) -> datetime:
    """`until` is exclusive; a date's closed range ends a microsecond before the next."""
    from datetime import timedelta

    return moment + timedelta(microseconds=1)


@router.get("/AuditEvent", responses={200: {"content": {"application/fhir+json": {}}}})
async def search_audit(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """Auditors search the whole trail; a patient's token sees the records about them only."""
    check_accept(request)
    access = authorize_interaction(principal, _TYPE, "search-type", runtime.registry)
    await check_live(runtime, principal)  # a revoked client, a suspended member, an ended session
    pairs = list(request.query_params.multi_items())
    criteria = _criteria(pairs)
    if access.compartment is not None:
        criteria["patient"] = f"Patient/{principal.patient_id}"
    bound = paging.binding("/AuditEvent", pairs)
    token = dict(pairs).get(paging.PAGE_PARAM)
    offset = runtime.sealer.open(token, bound) if token else 0
    count = page_size(dict(pairs).get("_count"), runtime)
    page = await search_events(runtime.db, **criteria, offset=offset, count=count)
    base = runtime.fhir_base(str(request.base_url))
    next_url = None
    if offset + len(page.events) < page.total and page.events:
        next_url = paging.page_url(base, "/AuditEvent", pairs, runtime.sealer.seal(offset + count, bound))
    body = bundles.searchset(
        base=base,
        matches=[(_TYPE, event["id"], orjson.dumps(event).decode()) for event in page.events],
        included=[],
        total=page.total,
        self_url=paging.page_url(base, "/AuditEvent", pairs, token),
        next_url=next_url,
        warnings=[],
    )
    return render(request, body.decode())


@router.get("/AuditEvent/$access-log")
async def access_log(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """The patient's own access log in words (`lang=nl|en`): who, from where, when, what, why, emergency."""
    check_accept(request)
    if not principal.is_patient or principal.patient_id is None:
        raise Forbidden("the access log is the patient's own; auditors search AuditEvent")
    authorize_interaction(principal, _TYPE, "search-type", runtime.registry)
    await check_live(runtime, principal)  # an ended session reads nothing
    lang = request.query_params.get("lang", "nl")
    if lang not in ("nl", "en"):
        raise BadRequest("lang is nl or en", code="value")
    count = page_size(request.query_params.get("_count"), runtime)
    offset = request.query_params.get("_offset", "0")
    if not (offset.isascii() and offset.isdigit()) or int(offset) > 1_000_000:
        raise BadRequest("_offset is a number of entries to skip, from 0", code="value")
    # `_offset`: every access stays within the patient's reach, not only the newest page (a patient's
    # walkthrough could not see past the 50 newest)
    total, entries = await patient_access_log(
        runtime.db, f"Patient/{principal.patient_id}", lang=lang, offset=int(offset), count=count
    )
    parameters: list[dict[str, Any]] = [{"name": "total", "valueInteger": total}]
    for entry in entries:
        parts: list[dict[str, Any]] = [
            {"name": "when", "valueInstant": _instant(entry.when)},
            {"name": "what", "valueString": entry.what},
            {"name": "why", "valueString": entry.why},
            {"name": "emergency", "valueBoolean": entry.emergency},
            {"name": "shared", "valueBoolean": entry.shared},
            {"name": "text", "valueString": entry.text},
        ]
        for name in ("who", "role", "organisation", "emergency_reason"):
            value = getattr(entry, name)
            if value:
                parts.append({"name": name.replace("_", "-"), "valueString": value})
        parameters.append({"name": "access", "part": parts})
    return Response(
        orjson.dumps({"resourceType": "Parameters", "parameter": parameters}), media_type=FHIR_JSON
    )


def _instant(moment: datetime) -> str:
    """A FHIR instant in UTC (`...Z`), from the local time the entry's words use or a naive UTC time."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")


@router.post("/AuditEvent", include_in_schema=False)
@router.put("/AuditEvent/{id}", include_in_schema=False)
@router.delete("/AuditEvent/{id}", include_in_schema=False)
async def refuse_writes() -> Response:
    raise MethodNotAllowed("the audit trail is written by the gateway only; it cannot be created or changed")
