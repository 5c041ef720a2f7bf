"""The FHIR REST interactions over HTTP: parse the request, call the store or an interaction, render.

Reads go out as the stored bytes; writes are validated once here, at the edge, and travel on as dicts.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.http import note as audit_note
from rzcp.auth.access import Access, require_named_patient
from rzcp.errors import BadRequest, Gone, Issue
from rzcp.exchange.router import regional_patient_search
from rzcp.fhir import interactions
from rzcp.fhir.capability import capability_statement
from rzcp.fhir.deps import (
    CanCreate,
    CanDelete,
    CanReadHistory,
    CanSearch,
    CanSearchHistory,
    CanUpdate,
    IdPath,
    Prefer,
    PreferDep,
    ReadConn,
    ResourceId,
    ResourceType,
    RuntimeDep,
    TypePath,
    WriteConn,
    instance_access,
    live_query,
    read_checked,
)
from rzcp.fhir.outcome import outcome_response
from rzcp.fhir.validation import validate_resource
from rzcp.fhir.wire import check_accept, read_form_body, read_json_body, render
from rzcp.runtime import Runtime
from rzcp.store.resources import ResourceStore, Version, instant

router = APIRouter(prefix="/fhir", tags=["FHIR"])

_FHIR_RESPONSE = {"content": {"application/fhir+json": {}}}


def base_url(request: Request, runtime: Runtime) -> str:
    return runtime.fhir_base(str(request.base_url))


def _version_headers(version: Version, request: Request, runtime: Runtime) -> dict[str, str]:
    base = base_url(request, runtime)
    location = f"{base}/{version.res_type}/{version.res_id}/_history/{version.version_id}"
    return {"ETag": version.etag, "Last-Modified": instant(version.last_updated), "Location": location}


def _written(request: Request, runtime: Runtime, version: Version, status: int, prefer: str) -> Response:
    headers = _version_headers(version, request, runtime)
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "operationoutcome":
        return outcome_response(status, [Issue("information", "informational", "done")], headers)
    return render(request, version.content, status=status, headers=headers)


def _note_sent(request: Request, version: Version) -> None:
    """For the audit: which patient the resource is about, and that one of its type went out."""
    record = audit_note(request)
    record.about_stored(version.res_type, version.res_id, version.content)
    record.sent(version.res_type, 1)


def _if_match(value: str | None) -> int | None:
    """The version in `If-Match: W/"3"` (or a bare `3`)."""
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f'If-Match {value!r} is not an ETag of the form W/"<version>"', code="value")
    return int(raw)


@router.get("/metadata", responses={200: _FHIR_RESPONSE})
async def metadata(request: Request, runtime: RuntimeDep) -> Response:
    check_accept(request)
    return render(request, capability_statement(runtime, base_url(request, runtime)))


@router.get("/{type}/_history", responses={200: _FHIR_RESPONSE})
async def type_history(
    request: Request, runtime: RuntimeDep, res_type: ResourceType, _access: CanSearchHistory, conn: ReadConn
) -> Response:
    pairs = list(request.query_params.multi_items())
    body = await interactions.history(conn, runtime, res_type, None, pairs, base=base_url(request, runtime))
    return render(request, body.decode())


@router.get("/{type}", responses={200: _FHIR_RESPONSE})
async def search_type(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    access: CanSearch,
    conn: ReadConn,
    prefer: PreferDep,
) -> Response:
    pairs = list(request.query_params.multi_items())
    return await _search(request, runtime, res_type, access, conn, prefer, pairs)


@router.post("/{type}/_search", responses={200: _FHIR_RESPONSE})
async def search_type_post(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    access: CanSearch,
    conn: ReadConn,
    prefer: PreferDep,
) -> Response:
    """Search with the parameters in a form body (and the URL), as FHIR allows."""
    form = await read_form_body(request, runtime.settings.max_body_bytes)
    pairs = list(request.query_params.multi_items()) + form
    return await _search(request, runtime, res_type, access, conn, prefer, pairs)


async def _search(
    request: Request,
    runtime: Runtime,
    res_type: str,
    access: Access,
    conn: AsyncConnection,
    prefer: Prefer,
    pairs: list[tuple[str, str]],
) -> Response:
    """A type search, by GET or POST alike: a Patient's BSN is looked up in the locator (the regional
    Patient carries none), anything else in the store."""
    if res_type == "Patient" and access.compartment is None:
        require_named_patient(access.principal, pairs)
        located = await regional_patient_search(request, runtime, conn, pairs)
        if located is not None:
            return located
    body = await interactions.search(
        conn,
        runtime,
        res_type,
        pairs,
        base=base_url(request, runtime),
        strict=prefer.strict,
        compartment=access.compartment,
        audit=audit_note(request),
        may_include=access.may_search,
    )
    return render(request, body.decode())


@router.post("/{type}", status_code=201, responses={201: _FHIR_RESPONSE})
async def create(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    access: CanCreate,
    conn: WriteConn,
    prefer: PreferDep,
    if_none_exist: Annotated[str | None, Header()] = None,
) -> Response:
    resource = validate_resource(
        await read_json_body(request, runtime.settings.max_body_bytes), expected_type=res_type
    )
    if if_none_exist is not None:
        existing = await interactions.find_existing(
            conn, runtime, res_type, if_none_exist, access.compartment
        )
        if existing is not None:
            _note_sent(request, existing)
            return _written(request, runtime, existing, 200, prefer.return_)
    hook = runtime.write_hooks.get(res_type)
    if hook is not None:
        resource = await hook.prepare(conn, access.principal, resource)
    audit_note(request).about(resource)
    version = await ResourceStore(conn, runtime.registry).create(resource)
    if hook is not None:
        await hook.written(conn, version.content, version.res_id)
    if access.compartment is not None:
        await access.compartment.check_written(conn, res_type, version.res_id)
    return _written(request, runtime, version, 201, prefer.return_)


@router.get("/{type}/{id}", responses={200: _FHIR_RESPONSE})
async def read(request: Request, res_type: TypePath, res_id: IdPath) -> Response:
    # The hottest route: its dependencies are resolved in one call, not by FastAPI (bench/README.md).
    runtime, access = await instance_access(request, res_type, res_id, "read")
    async with runtime.db.query() as conn:
        version = await read_checked(conn, runtime, access, res_type, res_id)
    _note_sent(request, version)
    return render(
        request,
        version.content,
        headers={"ETag": version.etag, "Last-Modified": instant(version.last_updated)},
    )


@router.put("/{type}/{id}", responses={200: _FHIR_RESPONSE})
async def update(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    res_id: ResourceId,
    access: CanUpdate,
    conn: WriteConn,
    prefer: PreferDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    resource = validate_resource(
        await read_json_body(request, runtime.settings.max_body_bytes), expected_type=res_type
    )
    interactions.check_body_id(resource, res_id)
    if access.compartment is not None:
        await access.compartment.check(conn, res_type, res_id)
    hook = runtime.write_hooks.get(res_type)
    if hook is not None:
        resource = await hook.prepare(conn, access.principal, resource)
    audit_note(request).about(resource)
    version, created = await ResourceStore(conn, runtime.registry).update(
        resource, if_match=_if_match(if_match)
    )
    if hook is not None:
        await hook.written(conn, version.content, version.res_id)
    if access.compartment is not None:
        await access.compartment.check_written(conn, res_type, res_id)
    return _written(request, runtime, version, 201 if created else 200, prefer.return_)


@router.delete("/{type}/{id}", status_code=204)
async def delete(
    request: Request,
    res_type: ResourceType,
    res_id: ResourceId,
    access: CanDelete,
    conn: WriteConn,
    runtime: RuntimeDep,
) -> Response:
    if access.compartment is not None:
        await access.compartment.check(conn, res_type, res_id)
    store = ResourceStore(conn, runtime.registry)
    try:
        previous: Version | None = await store.read(res_type, res_id)
    except Gone:
        previous = None
    if previous is not None:
        audit_note(request).about(orjson.loads(previous.content))
    version = await store.delete(res_type, res_id)
    hook = runtime.write_hooks.get(res_type)
    if hook is not None and previous is not None:
        await hook.deleted(conn, previous.content, res_id)
    headers = {"ETag": version.etag} if version is not None else None
    return Response(status_code=204, headers=headers)


@router.get("/{type}/{id}/_history", responses={200: _FHIR_RESPONSE})
async def instance_history(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    res_id: ResourceId,
    access: CanReadHistory,
    conn: ReadConn,
) -> Response:
    if access.compartment is not None:
        await access.compartment.check(conn, res_type, res_id)
    pairs = list(request.query_params.multi_items())
    body = await interactions.history(conn, runtime, res_type, res_id, pairs, base=base_url(request, runtime))
    return render(request, body.decode())


@router.get("/{type}/{id}/_history/{vid}", responses={200: _FHIR_RESPONSE})
async def vread(request: Request, vid: str, res_type: TypePath, res_id: IdPath) -> Response:
    runtime, access = await instance_access(request, res_type, res_id, "vread")
    if not (vid.isascii() and vid.isdigit()) or len(vid) > 9:
        raise BadRequest(f"{vid!r} is not a version id of this server", code="value")
    async with live_query(runtime, access.principal) as conn:
        if access.compartment is not None:
            await access.compartment.check(conn, res_type, res_id)
        version = await ResourceStore(conn, runtime.registry).vread(res_type, res_id, int(vid))
    _note_sent(request, version)
    return render(
        request,
        version.content,
        headers={"ETag": version.etag, "Last-Modified": instant(version.last_updated)},
    )
