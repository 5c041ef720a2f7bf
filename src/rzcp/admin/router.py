"""`/admin/api/...`: the administrators' console's JSON API (docs/admin-api.md). Thin: each route checks
the role, parses, calls the module that does the work and shapes nothing itself. Every call is audited
(rzcp.admin.console_audit); errors are OperationOutcomes from rzcp.errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from rzcp.admin import audit_views, members, stats, verify_runs
from rzcp.admin.access import Admin, Auditor, LoggedIn
from rzcp.admin.console_audit import SECRET_PARAMS, ConsoleRoute, console_params
from rzcp.admin.health import UNKNOWN, member_health, outbox_backlog
from rzcp.admin.params import known_only
from rzcp.admin.rollup import catch_up
from rzcp.audit import signer_from_settings
from rzcp.audit.moments import LOCAL
from rzcp.auth import registry
from rzcp.errors import BadRequest, NotFound
from rzcp.exchange.locator import Locator
from rzcp.exchange.secrets import BsnProtector
from rzcp.fhir.wire import read_json_body
from rzcp.runtime import Runtime

router = APIRouter(prefix="/admin/api", tags=["admin console"], route_class=ConsoleRoute)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def _body(request: Request) -> dict[str, Any]:
    body = await read_json_body(request, _runtime(request).settings.max_body_bytes, asked="application/json")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


@router.get("/me", name="me")
async def me(principal: LoggedIn) -> dict[str, Any]:
    roles = principal.roles if principal.kind == "person" else ((principal.role,) if principal.role else ())
    return {"subject": principal.subject, "roles": list(roles), "second_factor": principal.has_second_factor}


@router.get("/categories", name="categories")
async def categories(request: Request, _: Admin) -> dict[str, Any]:
    entries = _runtime(request).policy.document.organisation_categories.entries
    return {"categories": [{"code": entry.code, "name": entry.name} for entry in entries]}


@router.get("/members", name="members.list")
async def list_members(request: Request, _: Admin) -> dict[str, Any]:
    db = _runtime(request).db
    await catch_up(db)
    async with db.read() as conn:
        found = await registry.list_members(conn)
        health = await member_health(conn)
        details = await request.app.state.exchange.directory.details(conn)
    return {
        "members": [members.member_json(m, health.get(m.ura, UNKNOWN), details.get(m.ura)) for m in found]
    }


@router.post("/members", name="members.add", status_code=201)
async def add_member(request: Request, _: Admin) -> dict[str, Any]:
    runtime = _runtime(request)
    body = await _body(request)
    noted = {k: str(body[k]) for k in ("ura", "name", "category", "endpoint", "adapter") if k in body}
    console_params(request).update(noted)
    async with runtime.db.write() as conn:
        exchange = request.app.state.exchange
        member = await members.add_member(
            conn,
            exchange.directory,
            runtime.registry,
            body,
            policy=runtime.policy,
            adapters=exchange.adapters.names(),
            https_only=runtime.settings.https_only,
        )
        details = await exchange.directory.details(conn, member.ura)
    return members.member_json(member, UNKNOWN, details.get(member.ura))


@router.patch("/members/{ura}", name="members.update")
async def update_member(request: Request, ura: str, _: Admin) -> dict[str, Any]:
    runtime = _runtime(request)
    change = members.member_change(await _body(request))
    console_params(request).update(members.noted_change(change))
    directory = request.app.state.exchange.directory
    async with runtime.db.write() as conn:
        if (was := await directory.current(conn, ura)) is not None:  # what each changed field was
            console_params(request).update(change.noted_before(was))
        await directory.update_member(
            conn, runtime.registry, ura, change, https_only=runtime.settings.https_only
        )
        member = await registry.get_member(conn, ura)
        health = await member_health(conn)
        details = await directory.details(conn, ura)
    assert member is not None  # update_member raised NotFound otherwise
    return members.member_json(member, health.get(ura, UNKNOWN), details.get(ura))


@router.post("/members/{ura}/suspend", name="members.suspend")
async def suspend_member(request: Request, ura: str, _: Admin) -> dict[str, Any]:
    return await _set_status(request, ura, request.app.state.exchange.directory.suspend_member)


@router.post("/members/{ura}/reinstate", name="members.reinstate")
async def reinstate_member(request: Request, ura: str, _: Admin) -> dict[str, Any]:
    return await _set_status(request, ura, request.app.state.exchange.directory.reinstate_member)


async def _set_status(request: Request, ura: str, change: Callable[..., Awaitable[None]]) -> dict[str, Any]:
    runtime = _runtime(request)
    async with runtime.db.write() as conn:
        await change(conn, runtime.registry, ura)
        member = await registry.get_member(conn, ura)
        health = await member_health(conn)
        details = await request.app.state.exchange.directory.details(conn, ura)
    assert member is not None  # `change` raised NotFound otherwise
    return members.member_json(member, health.get(ura, UNKNOWN), details.get(ura))


@router.get("/clients", name="clients.list")
async def list_clients(request: Request, _: Admin) -> dict[str, Any]:
    async with _runtime(request).db.read() as conn:
        found = await registry.list_clients(conn)
    return {"clients": [members.client_json(c) for c in found]}


@router.post("/clients", name="clients.add", status_code=201)
async def add_client(request: Request, admin: Admin) -> dict[str, Any]:
    runtime = _runtime(request)
    body = await _body(request)
    noted = {k: str(body[k]) for k in ("client_id", "member_ura", "scope", "role") if k in body}
    console_params(request).update(noted | members.noted_keys(body))
    async with runtime.db.write() as conn:
        client = await members.add_client(
            conn, body, runtime.settings.jwks_allowed_hosts, runtime.settings.https_only, admin
        )
        stored = await registry.get_client(conn, client.client_id)
    return members.client_json(stored or client)


@router.put("/clients/{client_id}/keys", name="clients.keys")
async def replace_client_keys(request: Request, client_id: str, admin: Admin) -> dict[str, Any]:
    runtime = _runtime(request)
    body = await _body(request)
    console_params(request).update(members.noted_keys(body))
    async with runtime.db.write() as conn:
        client = await members.replace_client_keys(
            conn, client_id, body, runtime.settings.jwks_allowed_hosts, runtime.settings.https_only, admin
        )
    return members.client_json(client)


@router.put("/clients/{client_id}/scope", name="clients.scope")
async def set_client_scope(request: Request, client_id: str, admin: Admin) -> dict[str, Any]:
    """The client's registered scopes replaced (`{"scope": "system/..."}`), checked as at registration. A
    token the new scopes do not cover is refused from its next use; a wider scope comes with the next
    token."""
    runtime = _runtime(request)
    body = await _body(request)
    if "scope" in body:
        console_params(request)["scope"] = str(body["scope"])
    async with runtime.db.write() as conn:
        client = await members.set_client_scope(conn, client_id, body, admin)
    return members.client_json(client)


@router.post("/clients/{client_id}/revoke", name="clients.revoke")
async def revoke_client(request: Request, client_id: str, _: Admin) -> dict[str, Any]:
    async with _runtime(request).db.write() as conn:
        await registry.revoke_client(conn, client_id)
        client = await registry.get_client(conn, client_id)
    if client is None:
        raise NotFound(f"no client with id {client_id}")
    return members.client_json(client)


@router.get("/health", name="health")
async def health(request: Request, _: Admin) -> dict[str, Any]:
    db = _runtime(request).db
    await catch_up(db)
    async with db.read() as conn:
        found = await registry.list_members(conn)
        by_ura = await member_health(conn)
        backlog = await outbox_backlog(conn)
    last = await verify_runs.last_run(db)
    active = [m for m in found if m.status == "active"]
    failing = [m for m in active if by_ura.get(m.ura, UNKNOWN).state == "failing"]
    # patient data to these members travels unencrypted: in production that is a fault to mend
    in_clear = [m for m in active if registry.in_clear(m.endpoint)]
    degraded = bool(failing) or backlog["failed"] > 0 or (last is not None and not last["ok"])
    degraded = degraded or (bool(in_clear) and _runtime(request).settings.https_only)
    return {
        "status": "degraded" if degraded else "ok",
        "members": {"active": len(active), "suspended": len(found) - len(active), "failing": len(failing)},
        "failing_members": [
            {
                "ura": m.ura,
                "name": m.name,
                "failures_24h": by_ura[m.ura].failures_24h,
                "last_failure": by_ura[m.ura].json()["last_failure"],
            }
            for m in failing
        ],
        "plain_http_members": [{"ura": m.ura, "name": m.name, "endpoint": m.endpoint} for m in in_clear],
        "outbox": backlog,
        "audit_verify": last,
    }


async def _criteria(request: Request, params: Mapping[str, str]) -> dict[str, Any]:
    runtime = _runtime(request)
    locator = Locator(BsnProtector(runtime.settings.bsn_secret))
    async with runtime.db.read() as conn:
        found = await audit_views.criteria(conn, locator, params)
    if found.get("patient") not in (None, audit_views.NOTHING):
        # the regional id, for the trail's readers; and the record is filed under that patient, so a later
        # search by the patient and the patient's own log show that the region looked (an administrator's
        # walkthrough found the reading unfiled)
        console_params(request)["patient"] = found["patient"]
    return found


def _url_params(request: Request) -> Mapping[str, str]:
    """The filters of a GET: never a BSN, which would sit in every proxy's access log."""
    if "bsn" in request.query_params:
        raise BadRequest("a BSN is never sent in a URL: POST the filters as a JSON body instead")
    return request.query_params


async def _body_params(request: Request) -> dict[str, str]:
    """The filters of a POST, as the JSON body's string values (the same names as the GET's parameters)."""
    body = await _body(request)
    if not all(isinstance(v, str | int | bool) for v in body.values()):
        raise BadRequest("each filter is a string")
    params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()}
    console_params(request).update({k: f"{k} given" if k in SECRET_PARAMS else v for k, v in params.items()})
    return params


async def _search(request: Request, params: Mapping[str, str]) -> dict[str, Any]:
    known_only(params, audit_views.SEARCH_PARAMS, "the audit search")
    found = await _criteria(request, params)
    count = audit_views.page_size(params.get("count"))
    db = _runtime(request).db
    answer = await audit_views.search(db, found, count=count, page=params.get("page"))
    # what the last check of the chain found, beside the records it concerns: a broken trail was reported on
    # the integrity screen while the searches showed a changed record without a word (an administrator's
    # walkthrough)
    answer["integrity"] = await verify_runs.last_run(db)
    return answer


@router.get("/audit/events", name="audit.search")
async def search_events(request: Request, _: Auditor) -> dict[str, Any]:
    return await _search(request, _url_params(request))


@router.post("/audit/events/_search", name="audit.search")
async def search_events_posted(request: Request, _: Auditor) -> dict[str, Any]:
    """The same search with the filters in the body: what the console sends, so a BSN stays out of URLs."""
    return await _search(request, await _body_params(request))


@router.get("/audit/events/{event_id}", name="audit.read")
async def read_event(request: Request, event_id: str, _: Auditor) -> dict[str, Any]:
    runtime = _runtime(request)
    detail = await audit_views.event_detail(runtime.db, runtime.registry, event_id)
    about = (detail.get("summary") or {}).get("patient")
    if about:  # reading a record about a patient is an access to that patient's trail
        console_params(request)["patient"] = about
    return detail


async def _export(request: Request, params: Mapping[str, str]) -> StreamingResponse:
    known_only(params, audit_views.EXPORT_PARAMS, "the audit export")
    fmt = params.get("format", "ndjson")
    if fmt not in ("ndjson", "csv"):
        raise BadRequest("format is ndjson or csv")
    found = await _criteria(request, params)
    today = datetime.now(LOCAL).date().isoformat()
    media = "application/x-ndjson" if fmt == "ndjson" else "text/csv; charset=utf-8"
    return StreamingResponse(
        audit_views.export(_runtime(request).db, found, fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="rzcp-audit-{today}.{fmt}"'},
    )


@router.get("/audit/export", name="audit.export")
async def export(request: Request, _: Auditor) -> StreamingResponse:
    return await _export(request, _url_params(request))


@router.post("/audit/export", name="audit.export")
async def export_posted(request: Request, _: Auditor) -> StreamingResponse:
    return await _export(request, await _body_params(request))


@router.get("/audit/verify", name="audit.verify.last")
async def last_verify(request: Request, _: Auditor) -> dict[str, Any]:
    return {"last": await verify_runs.last_run(_runtime(request).db)}


@router.post("/audit/verify", name="audit.verify.run")
async def run_verify(request: Request, principal: Auditor) -> dict[str, Any]:
    runtime = _runtime(request)
    signer = signer_from_settings(runtime.settings)
    return {"last": await verify_runs.run_and_record(runtime.db, signer, by=principal.subject)}


@router.get("/audit/stats", name="audit.stats")
async def exchange_stats(request: Request, _: Auditor) -> JSONResponse:
    params = request.query_params
    known_only(params, stats.PARAMS, "the audit stats")
    today = datetime.now(UTC).astimezone(LOCAL).date()
    days = stats.period(params.get("since"), params.get("until"), today=today)
    return JSONResponse(await stats.exchange_stats(_runtime(request).db, days))
