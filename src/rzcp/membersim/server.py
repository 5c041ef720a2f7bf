"""A simulated member organisation's own FHIR server: the foundation's app on its own database and port.

`create_member_app(...)` is `rzcp.app.create_app` serving every R4 type ("*"), with the gateway's token
authentication switched off (`auth_enabled=False`: a member's server is not the region's API) and, in its
place, the member's own simple auth: none, or one static bearer token checked by `StaticBearer` on
everything under /fhir except /fhir/metadata. A request without `X-Acting-Practitioner` (which the
foundation's API asks of system callers) gets the member's own system as the actor, so any FHIR client can
call it like a plain FHIR server. It adds what a receiving member needs for the exchange:
`POST /fhir/$process-message`, which keeps each message once per idempotency key (the `Idempotency-Key`
header, else the Bundle's id) as a stored Bundle and answers a repeat with 200 and `X-Duplicate: true`
without processing it again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rzcp.app import create_app
from rzcp.errors import BadRequest, Gone, Issue, NotFound
from rzcp.fhir.outcome import operation_outcome
from rzcp.fhir.wire import read_json_body
from rzcp.settings import Settings
from rzcp.store.resources import ResourceStore

FHIR_JSON = "application/fhir+json"
_OPEN_PATHS = frozenset({"/fhir/metadata", "/healthz", "/readyz"})
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def member_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "fhir_resource_types": ["*"],
        "auth_enabled": False,
        "auto_migrate": True,
        "outbox_worker": False,  # a member's own server delivers nothing for the region
    }
    values.update(overrides)
    return Settings(**values)


class StaticBearer:
    """ASGI middleware: requests under /fhir (metadata excepted) need `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in _OPEN_PATHS or not path.startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(operation_outcome([Issue("error", "login", "a valid bearer token is required")]))
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", FHIR_JSON.encode()),
                    (b"www-authenticate", b'Bearer realm="member"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


#: The OID of the URA register (UZI-register), for the member acting as itself.
URA_OID = "2.16.528.1.1007.3.3"


class MemberContextDefaults:
    """ASGI middleware: a member's server does not take part in the region's request context, but the
    foundation's FHIR API asks every system caller for `X-Acting-Practitioner` (rzcp.auth.context). A
    request without one gets the member's own system as the actor, so any FHIR client can call the
    simulated member as it would call a plain FHIR server."""

    def __init__(self, app: ASGIApp, ura: str) -> None:
        self.app = app
        self.actor = f"urn:oid:{URA_OID}|{ura}".encode()  # the organisation itself, by its URA

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == b"x-acting-practitioner" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], (b"x-acting-practitioner", self.actor)]}
        await self.app(scope, receive, send)


def _message_id(request: Request, bundle: dict[str, Any]) -> str:
    key = request.headers.get("idempotency-key") or bundle.get("id")
    if not isinstance(key, str) or not key.strip():
        raise BadRequest("a message needs an Idempotency-Key header or a Bundle id", code="required")
    key = key.strip()
    return key if _ID.match(key) else hashlib.sha256(key.encode()).hexdigest()


async def process_message(request: Request) -> Response:
    """Keep a FHIR message Bundle once per idempotency key; a repeat is acknowledged, not processed."""
    runtime = request.app.state.runtime
    bundle = await read_json_body(request, runtime.settings.max_body_bytes)
    if (
        not isinstance(bundle, dict)
        or bundle.get("resourceType") != "Bundle"
        or bundle.get("type") != "message"
    ):
        raise BadRequest("$process-message takes a Bundle of type message", code="invalid")
    entries = bundle.get("entry") or []
    first = (
        entries[0].get("resource")
        if isinstance(entries, list) and entries and isinstance(entries[0], dict)
        else None
    )
    if not isinstance(first, dict) or first.get("resourceType") != "MessageHeader":
        raise BadRequest("a message Bundle starts with its MessageHeader", code="invalid")
    message_id = _message_id(request, bundle)
    duplicate = False
    try:
        async with runtime.db.write() as conn:
            store = ResourceStore(conn, runtime.registry)
            try:
                await store.read("Bundle", message_id)
                duplicate = True
            except (NotFound, Gone):  # not seen before
                await store.create({**bundle, "id": message_id}, res_id=message_id)
    except IntegrityError:  # the same key delivered twice at once: the other request stored it
        duplicate = True
    text = "already processed" if duplicate else "processed"
    body = operation_outcome([Issue("information", "informational", f"message {message_id} {text}")])
    headers = {"X-Duplicate": "true"} if duplicate else {}
    return Response(orjson.dumps(body), status_code=200, media_type=FHIR_JSON, headers=headers)


def create_member_app(
    *,
    name: str,
    ura: str,
    database_url: str,
    token: str | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """The member's FHIR server (see the module); `settings` overrides the defaults of `member_settings`."""
    app = create_app(settings or member_settings(database_url))
    # Before the generic /fhir/{type} routes, which would take "$process-message" for a resource type.
    app.router.routes.insert(0, Route("/fhir/$process-message", process_message, methods=["POST"]))
    app.state.member = {"name": name, "ura": ura}
    app.add_middleware(MemberContextDefaults, ura=ura)
    if token:
        app.add_middleware(StaticBearer, token=token)
    return app
