"""The FHIR REST interactions over HTTP: parse the request, call the store or an interaction, render.

Reads go out as the stored bytes; writes are validated once here, at the edge, and travel on as dicts.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from rzcp.errors import BadRequest, Issue, UnsupportedMediaType
from rzcp.fhir import interactions
from rzcp.fhir.capability import capability_statement
from rzcp.fhir.deps import PreferDep, ReadConn, ResourceId, ResourceType, RuntimeDep, WriteConn
from rzcp.fhir.outcome import outcome_response
from rzcp.fhir.validation import validate_resource
from rzcp.fhir.wire import check_accept, read_json_body, render
from rzcp.runtime import Runtime
from rzcp.store.resources import ResourceStore, Version, instant

router = APIRouter(prefix="/fhir", tags=["FHIR"])

_FHIR_RESPONSE = {"content": {"application/fhir+json": {}}}


def base_url(request: Request, runtime: Runtime) -> str:
    configured = runtime.settings.public_base_url
    return configured.rstrip("/") if configured else str(request.base_url).rstrip("/") + "/fhir"


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


def _if_match(value: str | None) -> int | None:
    """The version in `If-Match: W/"3"` (or a bare `3`)."""
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise BadRequest(f'If-Match {value!r} is not an ETag of the form W/"<version>"', code="value")
    return int(raw)


@router.get("/metadata", responses={200: _FHIR_RESPONSE})
async def metadata(request: Request, runtime: RuntimeDep) -> Response:
    check_accept(request)
    return render(request, capability_statement(runtime, base_url(request, runtime)))


@router.get("/{type}/_history", responses={200: _FHIR_RESPONSE})
async def type_history(
    request: Request, runtime: RuntimeDep, res_type: ResourceType, conn: ReadConn
) -> Response:
    pairs = list(request.query_params.multi_items())
    body = await interactions.history(conn, runtime, res_type, None, pairs, base=base_url(request, runtime))
    return render(request, body.decode())


@router.get("/{type}", responses={200: _FHIR_RESPONSE})
async def search_type(
    request: Request, runtime: RuntimeDep, res_type: ResourceType, conn: ReadConn, prefer: PreferDep
) -> Response:
    pairs = list(request.query_params.multi_items())
    body = await interactions.search(
        conn, runtime, res_type, pairs, base=base_url(request, runtime), strict=prefer.strict
    )
    return render(request, body.decode())


@router.post("/{type}/_search", responses={200: _FHIR_RESPONSE})
async def search_type_post(
    request: Request, runtime: RuntimeDep, res_type: ResourceType, conn: ReadConn, prefer: PreferDep
) -> Response:
    """Search with the parameters in a form body (and the URL), as FHIR allows."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    form = await request.form()
    pairs = list(request.query_params.multi_items()) + [(k, str(v)) for k, v in form.multi_items()]
    body = await interactions.search(
        conn, runtime, res_type, pairs, base=base_url(request, runtime), strict=prefer.strict
    )
    return render(request, body.decode())


@router.post("/{type}", status_code=201, responses={201: _FHIR_RESPONSE})
async def create(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    conn: WriteConn,
    prefer: PreferDep,
    if_none_exist: Annotated[str | None, Header()] = None,
) -> Response:
    resource = validate_resource(
        await read_json_body(request, runtime.settings.max_body_bytes), expected_type=res_type
    )
    if if_none_exist is not None:
        existing = await interactions.find_existing(conn, runtime, res_type, if_none_exist)
        if existing is not None:
            return _written(request, runtime, existing, 200, prefer.return_)
    version = await ResourceStore(conn, runtime.registry).create(resource)
    return _written(request, runtime, version, 201, prefer.return_)


@router.get("/{type}/{id}", responses={200: _FHIR_RESPONSE})
async def read(
    request: Request, runtime: RuntimeDep, res_type: ResourceType, res_id: ResourceId, conn: ReadConn
) -> Response:
    version = await ResourceStore(conn, runtime.registry).read(res_type, res_id)
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
    conn: WriteConn,
    prefer: PreferDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    resource = validate_resource(
        await read_json_body(request, runtime.settings.max_body_bytes), expected_type=res_type
    )
    interactions.check_body_id(resource, res_id)
    version, created = await ResourceStore(conn, runtime.registry).update(
        resource, if_match=_if_match(if_match)
    )
    return _written(request, runtime, version, 201 if created else 200, prefer.return_)


@router.delete("/{type}/{id}", status_code=204)
async def delete(
    res_type: ResourceType, res_id: ResourceId, conn: WriteConn, runtime: RuntimeDep
) -> Response:
    version = await ResourceStore(conn, runtime.registry).delete(res_type, res_id)
    headers = {"ETag": version.etag} if version is not None else None
    return Response(status_code=204, headers=headers)


@router.get("/{type}/{id}/_history", responses={200: _FHIR_RESPONSE})
async def instance_history(
    request: Request, runtime: RuntimeDep, res_type: ResourceType, res_id: ResourceId, conn: ReadConn
) -> Response:
    pairs = list(request.query_params.multi_items())
    body = await interactions.history(conn, runtime, res_type, res_id, pairs, base=base_url(request, runtime))
    return render(request, body.decode())


@router.get("/{type}/{id}/_history/{vid}", responses={200: _FHIR_RESPONSE})
async def vread(
    request: Request,
    runtime: RuntimeDep,
    res_type: ResourceType,
    res_id: ResourceId,
    vid: str,
    conn: ReadConn,
) -> Response:
    if not vid.isdigit() or len(vid) > 9:
        raise BadRequest(f"{vid!r} is not a version id of this server", code="value")
    version = await ResourceStore(conn, runtime.registry).vread(res_type, res_id, int(vid))
    return render(
        request,
        version.content,
        headers={"ETag": version.etag, "Last-Modified": instant(version.last_updated)},
    )
