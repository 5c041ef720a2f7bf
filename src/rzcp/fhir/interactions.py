"""The FHIR interactions that take more than one store call: search with paging, conditional create,
history. Plain Python over a connection; the router turns HTTP into these calls and their results into
responses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.http import AuditNote
from rzcp.errors import BadRequest, Forbidden, PreconditionFailed
from rzcp.fhir import bundles, paging
from rzcp.fhir.search.parser import SearchQuery, parse_search
from rzcp.fhir.search.values import parse_date_range
from rzcp.runtime import Runtime
from rzcp.store.resources import ResourceStore, Version
from rzcp.store.search_sql import StoredRow, execute_search

if TYPE_CHECKING:
    from rzcp.auth.compartment import PatientCompartment

#: Result parameters that reshape each entry; handled by the Bundle writer, not the query.
_RESHAPING = ("_elements", "_summary")


async def search(
    conn: AsyncConnection,
    runtime: Runtime,
    res_type: str,
    pairs: Sequence[tuple[str, str]],
    *,
    base: str,
    strict: bool,
    compartment: PatientCompartment | None = None,
    audit: AuditNote | None = None,
    may_include: Callable[[str], None] | None = None,
) -> bytes:
    """A searchset Bundle for one page of `res_type?pairs`; `_page` in pairs picks the page.

    With a `compartment` (a patient's token) the search is confined to it and so are the included
    resources. `may_include` raises when the caller may not search a type: asked before the search for
    every type an `_include`/`_revinclude` names (a clear refusal that depends on no data), and after it
    for the type of every resource included (an `_include` without a target type may reach any type its
    reference can point to; what the caller may not search is left out, as if not there)."""
    path = f"/{res_type}"
    bound = paging.binding(path, pairs)
    token = dict(pairs).get(paging.PAGE_PARAM)
    offset = runtime.sealer.open(token, bound) if token else 0
    settings = runtime.settings
    criteria = list(paging.search_params(pairs))
    if compartment is not None:
        criteria += compartment.criteria(res_type)
    query = parse_search(
        res_type,
        criteria,
        runtime.registry,
        strict=strict,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )
    if may_include is not None:
        for named in _named_include_types(query):
            may_include(named)
    result = await execute_search(conn, query, offset=offset)
    included = result.included
    if may_include is not None and included:
        included = _permitted(included, may_include)
    if compartment is not None and included:
        included = await compartment.visible(conn, included)
    if audit is not None:
        for sent_type, sent in Counter(r.res_type for r in (*result.matches, *included)).items():
            audit.sent(sent_type, sent)
    next_url = None
    if result.has_more:
        next_url = paging.page_url(base, path, pairs, runtime.sealer.seal(offset + query.count, bound))
    params = dict(pairs)
    summary = params.get("_summary")
    return bundles.searchset(
        base=base,
        matches=[(r.res_type, r.res_id, r.content) for r in result.matches],
        included=[(r.res_type, r.res_id, r.content) for r in included],
        total=result.total,
        self_url=paging.page_url(base, path, pairs, token),
        next_url=next_url,
        warnings=list(query.warnings),
        elements=params.get("_elements"),
        summary=summary if summary in ("true", "text", "data") else None,
    )


def _named_include_types(query: SearchQuery) -> set[str]:
    """The types the query's `_include`s and `_revinclude`s name outright."""
    named = {inc.source_type for inc in query.revincludes}
    named.update(inc.target_type for inc in query.includes if inc.target_type is not None)
    return named


def _permitted(rows: list[StoredRow], may_include: Callable[[str], None]) -> list[StoredRow]:
    allowed: dict[str, bool] = {}
    for res_type in {row.res_type for row in rows}:
        try:
            may_include(res_type)
            allowed[res_type] = True
        except Forbidden:
            allowed[res_type] = False
    return [row for row in rows if allowed[row.res_type]]


async def find_existing(
    conn: AsyncConnection,
    runtime: Runtime,
    res_type: str,
    if_none_exist: str,
    compartment: PatientCompartment | None = None,
) -> Version | None:
    """The one resource that an If-None-Exist query matches; None when none; 412 when several do."""
    pairs = parse_qsl(if_none_exist.lstrip("?"), keep_blank_values=True)
    if not pairs:
        raise BadRequest("If-None-Exist needs search parameters, such as identifier=system|value")
    if compartment is not None:
        pairs += compartment.criteria(res_type)
    query = parse_search(res_type, pairs, runtime.registry, strict=True, default_count=2, max_count=2)
    result = await execute_search(conn, query, offset=0)
    if len(result.matches) > 1:
        raise PreconditionFailed(
            f"If-None-Exist matches {len(result.matches)} or more resources; be more specific"
        )
    if not result.matches:
        return None
    match = result.matches[0]
    return await ResourceStore(conn, runtime.registry).read(match.res_type, match.res_id)


def _history_moment(pairs: Sequence[tuple[str, str]], name: str) -> datetime | None:
    value = dict(pairs).get(name)
    if value is None:
        return None
    try:
        low, _high = parse_date_range(value)
    except ValueError:
        raise BadRequest(f"{name}={value!r} is not a FHIR instant", expression=(name,)) from None
    return low


async def history(
    conn: AsyncConnection,
    runtime: Runtime,
    res_type: str,
    res_id: str | None,
    pairs: Sequence[tuple[str, str]],
    *,
    base: str,
) -> bytes:
    path = f"/{res_type}" + (f"/{res_id}" if res_id else "") + "/_history"
    known = {"_count", "_since", "_at", paging.PAGE_PARAM, "_format", "_pretty"}
    unknown = sorted({k for k, _ in pairs} - known)
    if unknown:
        raise BadRequest(
            f"history does not support the parameter(s) {', '.join(unknown)}", code="not-supported"
        )
    bound = paging.binding(path, pairs)
    token = dict(pairs).get(paging.PAGE_PARAM)
    offset = runtime.sealer.open(token, bound) if token else 0
    count = page_size(dict(pairs).get("_count"), runtime)
    versions, has_more = await ResourceStore(conn, runtime.registry).history(
        res_type,
        res_id,
        since=_history_moment(pairs, "_since"),
        at_or_before=_history_moment(pairs, "_at"),
        count=count,
        offset=offset,
    )
    next_url = None
    if has_more:
        next_url = paging.page_url(base, path, pairs, runtime.sealer.seal(offset + count, bound))
    return bundles.history(
        base=base,
        versions=versions,
        total=None,
        self_url=paging.page_url(base, path, pairs, token),
        next_url=next_url,
    )


def page_size(raw: str | None, runtime: Runtime) -> int:
    """`_count` for history and the audit trail: the default when absent, capped at the maximum."""
    settings = runtime.settings
    if raw is None:
        return settings.default_page_size
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"_count={raw!r} is not a whole number", expression=("_count",))
    return max(1, min(int(raw), settings.max_page_size))


def check_body_id(resource: dict[str, Any], path_id: str | None) -> None:
    """FHIR's rules for ids in bodies: none on create, the path's on update."""
    body_id = resource.get("id")
    if path_id is None:
        return
    if body_id is None:
        raise BadRequest("the resource in an update must carry its id", code="required", expression=("id",))
    if body_id != path_id:
        raise BadRequest(
            f"the body's id {body_id!r} does not match the URL's {path_id!r}",
            code="invalid",
            expression=("id",),
        )
