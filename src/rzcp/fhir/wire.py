"""FHIR's JSON on the wire: what the client may send and accept, reading a body within the size limit,
and rendering a response (`_pretty`, `_format`, `_elements`, `_summary`).

Stored resources are already JSON text; a plain read sends those bytes without parsing them again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request
from fastapi.responses import Response

from rzcp.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from rzcp.fhir.validation import summary_elements

FHIR_JSON = "application/fhir+json; charset=utf-8"

_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_JSON_FORMATS = _JSON_TYPES | {"json"}
_XML_HINTS = ("xml", "turtle", "ttl", "html")


def check_accept(request: Request) -> None:
    """Refuse what we cannot produce: FHIR XML or RDF (406). `_format` overrides the Accept header."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in _JSON_FORMATS:
            raise NotAcceptable(f"_format={fmt} is not supported; this server speaks application/fhir+json")
        return
    accept = request.headers.get("accept", "")
    if not accept:
        return
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if any(k in _JSON_TYPES or k in ("*/*", "application/*") for k in kinds):
        return
    raise NotAcceptable(f"cannot answer with {accept}; this server speaks application/fhir+json")


def wants_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "false").lower() == "true"


async def read_json_body(request: Request, max_bytes: int, *, asked: str = "application/fhir+json") -> Any:
    """The request body parsed as JSON, refusing wrong media types, bodies over the limit and bad JSON.
    `asked`: the media type a refusal names (the console's API is plain JSON, not FHIR)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media not in _JSON_TYPES:
        shown = content_type or "no Content-Type"
        raise UnsupportedMediaType(f"{shown} is not supported: send {asked}")
    body = await _read_body(request, max_bytes)
    if not body.strip():
        raise BadRequest("the request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(_json_problem(exc), code="structure") from None


#: orjson's fixed nesting limit (its documentation says 1024).
JSON_DEPTH = 1024


def _json_problem(exc: orjson.JSONDecodeError) -> str:
    """What is wrong with the body, in the parser's own terms where they say more than "not valid" (an
    integrator's walkthrough: valid JSON nested too deeply, and bytes that are not UTF-8, were both told
    "not valid JSON at character ...")."""
    why = str(exc).partition(":")[0]
    if why.startswith("depth limit exceeded"):
        return f"the body is nested more than {JSON_DEPTH} levels deep (at character {exc.pos})"
    if "UTF-8" in why:
        return "the body is not UTF-8"
    return f"the body is not valid JSON (at character {exc.pos})"


async def read_form_body(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """Search parameters sent as an `application/x-www-form-urlencoded` body (POST _search)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    body = await _read_body(request, max_bytes)
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form body is not UTF-8 url-encoded parameters") from None


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (declared.isascii() and declared.isdigit()) and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def render(
    request: Request,
    body: dict[str, Any] | str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A FHIR JSON response; stored text goes out untouched unless the client asked for a reshaping."""
    pretty = wants_pretty(request)
    elements = request.query_params.get("_elements")
    summary = request.query_params.get("_summary")
    if isinstance(body, str) and not (pretty or elements or summary):
        return Response(body.encode(), status_code=status, media_type=FHIR_JSON, headers=headers)
    data = orjson.loads(body) if isinstance(body, str) else body
    if data.get("resourceType") != "Bundle":
        data = shape(data, elements=elements, summary=summary)
    option = orjson.OPT_INDENT_2 if pretty else 0
    return Response(
        orjson.dumps(data, option=option), status_code=status, media_type=FHIR_JSON, headers=headers
    )


#: Elements every resource keeps under _elements and _summary (FHIR search.html#elements).
_MANDATORY = ("resourceType", "id", "meta")
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def shape(resource: dict[str, Any], *, elements: str | None, summary: str | None) -> dict[str, Any]:
    """Apply `_elements` (a list of top-level elements) or `_summary=text|data`, marking the result."""
    keep: set[str] | frozenset[str] | None = None
    if elements:
        keep = {e.strip().split(".")[-1] for e in elements.split(",") if e.strip()}
    elif summary == "text":
        keep = {"text"}
    elif summary == "true":
        keep = summary_elements(resource.get("resourceType", ""))
    elif summary == "data":
        shaped = {k: v for k, v in resource.items() if k != "text"}
        return _mark_subsetted(shaped)
    if keep is None:
        return resource
    shaped = {k: v for k, v in resource.items() if k in keep or k in _MANDATORY}
    return _mark_subsetted(shaped)


def _mark_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    """Also for a member's resource, which no model validated: odd meta and tags are left as they are."""
    meta = dict(resource["meta"]) if isinstance(resource.get("meta"), dict) else {}
    tags = meta.get("tag") if isinstance(meta.get("tag"), list) else []
    tags = [t for t in tags if not (isinstance(t, dict) and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, _SUBSETTED]
    return {**resource, "meta": meta}
