"""The request's dependencies, named by what they give: the gateway's runtime, a transaction to read or
write in (owned here: committed once when the endpoint returns, rolled back when it raises), the checked
resource type and id from the path, the caller's permission for the interaction (`CanRead`, ...), and the
client's `Prefer` wishes.

Every transaction first checks, in the database, that the caller's client and member are still active, so
a revocation or suspension holds from the next request on, in every process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth.access import Access, authorize_interaction
from rzcp.auth.deps import CurrentPrincipal
from rzcp.auth.registry import ensure_live
from rzcp.errors import BadRequest, NotFound
from rzcp.fhir.wire import check_accept
from rzcp.runtime import Runtime

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


async def _resource_type(
    request: Request, res_type: Annotated[str, Path(alias="type", max_length=64)]
) -> str:
    check_accept(request)
    if not _runtime(request).serves(res_type):
        raise NotFound(f"this server does not serve resource type {res_type!r}", code="not-supported")
    return res_type


async def _resource_id(res_id: Annotated[str, Path(alias="id", max_length=64)]) -> str:
    if not _ID.fullmatch(res_id):
        raise BadRequest(f"{res_id!r} is not a valid FHIR id", code="value")
    return res_id


ResourceType = Annotated[str, Depends(_resource_type)]
ResourceId = Annotated[str, Depends(_resource_id)]


def _can(interaction: str) -> Callable[..., Access]:
    async def dependency(request: Request, res_type: ResourceType, principal: CurrentPrincipal) -> Access:
        return authorize_interaction(principal, res_type, interaction, _runtime(request).registry)

    return dependency


CanRead = Annotated[Access, Depends(_can("read"))]
CanVread = Annotated[Access, Depends(_can("vread"))]
CanSearch = Annotated[Access, Depends(_can("search-type"))]
CanCreate = Annotated[Access, Depends(_can("create"))]
CanUpdate = Annotated[Access, Depends(_can("update"))]
CanDelete = Annotated[Access, Depends(_can("delete"))]
CanReadHistory = Annotated[Access, Depends(_can("history-instance"))]
CanSearchHistory = Annotated[Access, Depends(_can("history-type"))]


@dataclass(frozen=True)
class Prefer:
    strict: bool
    return_: str


async def _prefer(request: Request) -> Prefer:
    """`Prefer: handling=strict|lenient` (lenient by default) and `return=minimal|representation|...`."""
    wishes: dict[str, str] = {}
    for part in request.headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        wishes[key.strip().lower()] = value.strip().strip('"').lower()
    return Prefer(strict=wishes.get("handling") == "strict", return_=wishes.get("return", "representation"))


PreferDep = Annotated[Prefer, Depends(_prefer)]
