"""OperationOutcome: how every error leaves the gateway.

One handler per kind of failure, all ending in `outcome_response`. A 500 carries only a correlation id
that an operator can find in the server log; never the exception's text, which may hold internals or
patient data.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from rzcp.audit.http import note as audit_note
from rzcp.audit.redact import recorded_text
from rzcp.auth.bsn import without_bsns
from rzcp.errors import Issue, RzcpError

log = logging.getLogger("rzcp.errors")

FHIR_JSON = "application/fhir+json; charset=utf-8"

_STATUS_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
}


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    rendered = []
    for issue in issues:
        entry: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            entry["expression"] = list(issue.expression)
        rendered.append(entry)
    return {"resourceType": "OperationOutcome", "issue": rendered}


def outcome_response(status: int, issues: Iterable[Issue], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(operation_outcome(issues)), status_code=status, media_type=FHIR_JSON, headers=headers
    )


def _why_refused(request: Request, message: str) -> None:
    """What the caller is told is also what the audit record says of a refusal (a privacy officer found
    refused requests recorded with no reason at all), unless the endpoint said more; never a BSN."""
    record = audit_note(request)
    if record.outcome_desc is None:
        record.outcome_desc = recorded_text(message)[:500]


async def _rzcp_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RzcpError)
    _why_refused(request, exc.message)
    return outcome_response(exc.status, exc.issues(), exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "exception" if exc.status_code >= 500 else "invalid")
    message = {404: "No such endpoint", 405: "Method not allowed here"}.get(exc.status_code, str(exc.detail))
    _why_refused(request, message)
    return outcome_response(exc.status_code, [Issue("error", code, message)], dict(exc.headers or {}))


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue(
            "error", "invalid", f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
        )
        for err in exc.errors()[:20]
    ]
    return outcome_response(400, issues or [Issue("error", "invalid", "Invalid request")])


async def _integrity_error(_request: Request, _exc: Exception) -> Response:
    return outcome_response(
        409, [Issue("error", "conflict", "The write conflicts with a concurrent one; retry")]
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    incident = uuid.uuid4().hex
    path = without_bsns(request.url.path)  # `/fhir/Patient/<bsn>/$everything`: no BSN goes into a log
    if _database_unreachable(exc):
        log.error("database unavailable (incident %s) on %s %s", incident, request.method, path)
        return outcome_response(
            503,
            [Issue("error", "transient", f"The database is unavailable; retry later (incident {incident})")],
        )
    log.exception("unhandled error (incident %s) on %s %s", incident, request.method, path)
    return outcome_response(500, [Issue("error", "exception", f"Internal error (incident {incident})")])


#: Errors that say the connection to the database is gone (not all are wrapped by SQLAlchemy).
_CONNECTION_LOST = (
    ConnectionError,  # refused, reset, aborted
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    PoolTimeout,  # every connection of the pool busy past its timeout
)


def _database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection: a 503 the caller may retry, not a
    500 (an operator's walkthrough cut a gateway's connection). Outgoing calls to members never get here:
    their adapters report them."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _CONNECTION_LOST)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RzcpError, _rzcp_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    # answered inside the middleware: a handler of `Exception` answers outside it, and the server then
    # drops the client's connection and logs the statement again
    for error in (DBAPIError, *_CONNECTION_LOST):
        app.add_exception_handler(error, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
