"""The request's dependencies, named by what they give: the gateway's runtime, a transaction to read or
write in (owned here: committed once when the endpoint returns, rolled back when it raises), the checked
resource type and id from the path, and the client's `Prefer` wishes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.errors import BadRequest, NotFound
from rzcp.fhir.wire import check_accept
from rzcp.runtime import Runtime

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def _read_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    async with get_runtime(request).db.read() as conn:
        yield conn


async def _write_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    async with get_runtime(request).db.write() as conn:
        yield conn


ReadConn = Annotated[AsyncConnection, Depends(_read_conn)]
WriteConn = Annotated[AsyncConnection, Depends(_write_conn)]


def _resource_type(request: Request, res_type: Annotated[str, Path(alias="type", max_length=64)]) -> str:
    check_accept(request)
    if not get_runtime(request).serves(res_type):
        raise NotFound(f"this server does not serve resource type {res_type!r}", code="not-supported")
    return res_type


def _resource_id(res_id: Annotated[str, Path(alias="id", max_length=64)]) -> str:
    if not _ID.fullmatch(res_id):
        raise BadRequest(f"{res_id!r} is not a valid FHIR id", code="value")
    return res_id


ResourceType = Annotated[str, Depends(_resource_type)]
ResourceId = Annotated[str, Depends(_resource_id)]


@dataclass(frozen=True)
class Prefer:
    strict: bool
    return_: str


def _prefer(request: Request) -> Prefer:
    """`Prefer: handling=strict|lenient` (lenient by default) and `return=minimal|representation|...`."""
    wishes: dict[str, str] = {}
    for part in request.headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        wishes[key.strip().lower()] = value.strip().strip('"').lower()
    return Prefer(strict=wishes.get("handling") == "strict", return_=wishes.get("return", "representation"))


PreferDep = Annotated[Prefer, Depends(_prefer)]
