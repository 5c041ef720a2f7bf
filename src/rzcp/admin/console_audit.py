"""Every call of the console's API leaves an audit record of kind `console` (NEN 7513: reading the trail is
itself an access): who, which action, with which parameters, and how it ended. Written through the
process's audit writer before the answer leaves; when it cannot be written the caller gets a 503 and no
data, as on the FHIR API.

`ConsoleRoute` wraps each route's handler; an endpoint adds what the path and query do not say (the
fields of a body, the patient a BSN was mapped to) with `console_params(request).update(...)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from rzcp.audit.events import facts_from_principal
from rzcp.auth.bsn import without_bsns
from rzcp.errors import RzcpError

#: The regional patient a call concerned, as an endpoint noted it (`console_params(request)["patient"]`).
_PATIENT = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")
#: Query parameters whose value never goes into a record.
SECRET_PARAMS = frozenset({"bsn"})


def console_params(request: Request) -> dict[str, str]:
    """The parameters this call's record names (path and query ones are there already)."""
    found = getattr(request.state, "console_params", None)
    if found is None:
        found = request.state.console_params = {}
    return found


def status_of(exc: BaseException) -> int:
    if isinstance(exc, RzcpError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, RequestValidationError):
        return 400
    return 500


def _params(request: Request) -> tuple[tuple[str, str], ...]:
    given = [
        *request.path_params.items(),
        *request.query_params.multi_items(),
        *console_params(request).items(),
    ]
    return tuple((name, _recorded(name, str(value))) for name, value in given)


def _recorded(name: str, value: str) -> str:
    """A parameter as the record keeps it: a BSN never, whatever the parameter is called (`BSN`,
    `practitioner=<a BSN>`: found by a security test)."""
    return f"{name} given" if name.lower() in SECRET_PARAMS else without_bsns(value)


async def record(request: Request, action: str, status: int) -> None:
    runtime = request.app.state.runtime
    client = request.client
    about = console_params(request).get("patient")
    facts = facts_from_principal(
        getattr(request.state, "principal", None),
        patient=about if about and _PATIENT.fullmatch(about) else None,
        interaction="read" if request.method == "GET" else "operation",
        status=status,
        correlation_id=getattr(request.state, "request_id", "") or "",
        address=client.host if client else None,
        purpose=None,
        emergency_reason=None,
        console_action=action,
        console_params=_params(request),
    )
    await runtime.audit.record(facts)


class ConsoleRoute(APIRoute):
    """An APIRoute whose every call is audited under the route's name (`members.add` ...)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = self.name

        async def audited(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                await record(request, action, status_of(exc))
                raise
            await record(request, action, response.status_code)
            return response

        return audited
