"""The request's dependencies, named by what they give: the gateway's runtime, a transaction to read or
write in (owned here: committed once when the endpoint returns, rolled back when it raises), the checked
resource type and id from the path, the caller's permission for the interaction (`CanRead`, ...), and the
client's `Prefer` wishes.

Every transaction first checks, in the database, that the caller's client and member are still active, so
a revocation or suspension holds from the next request on, in every process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth.access import Access, authorize_interaction, authorize_rest_write
from rzcp.auth.deps import CurrentPrincipal, current_principal
from rzcp.auth.principal import Principal
from rzcp.auth.registry import (
    LIVE_COLUMN,
    ensure_live,
    live_params,
    needs_live_check,
    refuse_dead,
    still_live,
)
from rzcp.errors import BadRequest, MethodNotAllowed, NotFound
from rzcp.fhir.wire import check_accept
from rzcp.runtime import Runtime
from rzcp.store.resources import READ_STATEMENT, ResourceStore, Version

# Every dependency is `async def`: FastAPI runs a plain `def` one in the thread pool, a hop that costs
# more than the work of all of them together (bench/README.md).

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


async def get_runtime(request: Request) -> Runtime:
    return _runtime(request)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def _read_conn(request: Request, principal: CurrentPrincipal) -> AsyncIterator[AsyncConnection]:
    async with _runtime(request).db.query() as conn:
        await ensure_live(conn, principal)
        yield conn


async def _write_conn(request: Request, principal: CurrentPrincipal) -> AsyncIterator[AsyncConnection]:
    async with _runtime(request).db.write() as conn:
        await ensure_live(conn, principal)
        yield conn


ReadConn = Annotated[AsyncConnection, Depends(_read_conn)]
WriteConn = Annotated[AsyncConnection, Depends(_write_conn)]


#: The path's resource type and id as endpoint parameters (for routes that check them themselves).
TypePath = Annotated[str, Path(alias="type", max_length=64)]
IdPath = Annotated[str, Path(alias="id", max_length=64)]


def check_type(request: Request, runtime: Runtime, res_type: str) -> None:
    check_accept(request)
    if not runtime.serves(res_type):
        exchange = getattr(request.app.state, "exchange", None)
        if exchange is not None and res_type in exchange.pull_types:
            # the members' data is not kept here: the one way to it is the pull (a user's trial read a
            # 404 "does not serve Condition" for POST _search and thought the type unsupported)
            type_path = request.url.path.rstrip("/").endswith(f"/fhir/{res_type}")
            raise MethodNotAllowed(
                f"{res_type} is pulled from the members, never stored at the gateway: "
                f"GET /fhir/{res_type}?patient=Patient/<id> is the only interaction with it",
                headers={"Allow": "GET" if type_path else ""},  # RFC 9110: a 405 says what is allowed
            )
        raise NotFound(f"this server does not serve resource type {res_type!r}", code="not-supported")


def is_fhir_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_id(res_id: str) -> None:
    if not is_fhir_id(res_id):
        raise BadRequest(f"{res_id!r} is not a valid FHIR id", code="value")


async def _resource_type(request: Request, res_type: TypePath) -> str:
    check_type(request, _runtime(request), res_type)
    return res_type


async def _resource_id(res_id: IdPath) -> str:
    check_id(res_id)
    return res_id


ResourceType = Annotated[str, Depends(_resource_type)]
ResourceId = Annotated[str, Depends(_resource_id)]


def _can(interaction: str) -> Callable[..., Access]:
    async def dependency(request: Request, res_type: ResourceType, principal: CurrentPrincipal) -> Access:
        return authorize_rest_write(principal, res_type, interaction, _runtime(request).registry)

    return dependency


CanRead = Annotated[Access, Depends(_can("read"))]
CanVread = Annotated[Access, Depends(_can("vread"))]
CanSearch = Annotated[Access, Depends(_can("search-type"))]
CanCreate = Annotated[Access, Depends(_can("create"))]
CanUpdate = Annotated[Access, Depends(_can("update"))]
CanDelete = Annotated[Access, Depends(_can("delete"))]
CanReadHistory = Annotated[Access, Depends(_can("history-instance"))]
CanSearchHistory = Annotated[Access, Depends(_can("history-type"))]


async def instance_access(
    request: Request, res_type: str, res_id: str, interaction: str
) -> tuple[Runtime, Access]:
    """What `RuntimeDep, ResourceType, ResourceId, Can...` give, in one call and the same order (406/404
    for the type, 400 for the id, then the caller: 401, 400/403 for the context, 403 for the scopes).

    For the hot instance routes (read, vread): FastAPI resolving those six dependencies cost more than
    the rest of a read together (bench/README.md). Pair it with `live_query`."""
    runtime = _runtime(request)
    check_type(request, runtime, res_type)
    check_id(res_id)
    principal = await current_principal(request)
    return runtime, authorize_interaction(principal, res_type, interaction, runtime.registry)


_READ_LIVE = READ_STATEMENT.add_columns(LIVE_COLUMN)


async def read_checked(
    conn: AsyncConnection, runtime: Runtime, access: Access, res_type: str, res_id: str
) -> Version:
    """`ensure_live`, the compartment check and the store's read, for a connection from `db.query()`.

    A member system's liveness check rides in the read's own SELECT (a scalar subquery): the same
    database check on every request, one round trip instead of two. When no resource is found it is
    asked on its own first, so a revoked client gets its 401 and never learns what exists."""
    principal = access.principal
    store = ResourceStore(conn, runtime.registry)
    if access.compartment is not None or not needs_live_check(principal):
        await ensure_live(conn, principal)
        if access.compartment is not None:
            await access.compartment.check(conn, res_type, res_id)
        return await store.read(res_type, res_id)

    async def check(row: Row[Any] | None) -> None:
        if row is None:
            await ensure_live(conn, principal)
        elif not still_live(principal, row.rzcp_live):
            raise await refuse_dead(conn, principal)

    params = live_params(principal)
    return await store.read(res_type, res_id, statement=_READ_LIVE, params=params, check=check)


async def check_live(runtime: Runtime, principal: Principal) -> None:
    """`ensure_live` for a route whose work opens connections of its own (the audit trail's readers)."""
    async with runtime.db.query() as conn:
        await ensure_live(conn, principal)


@asynccontextmanager
async def live_query(runtime: Runtime, principal: Principal) -> AsyncIterator[AsyncConnection]:
    """`ReadConn` as a context manager: an autocommit read connection, the caller checked live first."""
    async with runtime.db.query() as conn:
        await ensure_live(conn, principal)
        yield conn


@dataclass(frozen=True)
class Prefer:
    strict: bool
    return_: str


async def _prefer(request: Request) -> Prefer:
    return prefer_of(request)


def prefer_of(request: Request) -> Prefer:
    """`Prefer: handling=strict|lenient` (lenient by default) and `return=minimal|representation|...`."""
    wishes: dict[str, str] = {}
    for part in request.headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        wishes[key.strip().lower()] = value.strip().strip('"').lower()
    return Prefer(strict=wishes.get("handling") == "strict", return_=wishes.get("return", "representation"))


PreferDep = Annotated[Prefer, Depends(_prefer)]
