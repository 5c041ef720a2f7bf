"""The one error hierarchy of the gateway. Every layer raises these; one handler turns them into an
OperationOutcome with the status and FHIR issue code they carry. Anything else is a bug and becomes a
500 that says nothing about its cause.

    RzcpError                      500 exception   (base; never raised itself)
    ├── BadRequest                 400 invalid
    │   ├── InvalidSearch          400 not-supported / invalid  (unknown parameter in strict mode, bad value)
    │   ├── InvalidResource        422 processing / structure  (fails FHIR validation or business rules)
    │   └── OAuthError             400 (or 401)  an RFC 6749 error, answered as OAuth JSON
    ├── Unauthorized               401 login
    ├── Forbidden                  403 forbidden
    ├── NotFound                   404 not-found
    ├── MethodNotAllowed           405 not-supported
    ├── NotAcceptable              406 not-supported
    ├── Gone                       410 deleted
    ├── Conflict                   409 conflict
    │   └── PreconditionFailed     412 conflict   (If-Match version conflict, ambiguous conditional create)
    ├── PayloadTooLarge            413 too-costly
    ├── UnsupportedMediaType       415 not-supported
    └── ServiceUnavailable         503 transient
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: what the client needs to fix, never server internals."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()


class RzcpError(Exception):
    status: int = 500
    code: str = "exception"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        expression: tuple[str, ...] = (),
        extra_issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.expression = expression
        self.extra_issues = extra_issues or []
        self.headers = headers or {}

    def issues(self) -> list[Issue]:
        return [Issue("error", self.code, self.message, self.expression), *self.extra_issues]


class BadRequest(RzcpError):
    status = 400
    code = "invalid"


class InvalidSearch(BadRequest):
    status = 400
    code = "invalid"


class InvalidResource(BadRequest):
    status = 422
    code = "processing"


class OAuthError(BadRequest):
    """An error of the OAuth endpoints: `error` is the RFC 6749 code (invalid_client, invalid_grant,
    invalid_scope, invalid_request, unsupported_grant_type, ...), answered as JSON with no-store."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


class Unauthorized(RzcpError):
    status = 401
    code = "login"


class Forbidden(RzcpError):
    status = 403
    code = "forbidden"


class NotFound(RzcpError):
    status = 404
    code = "not-found"


class MethodNotAllowed(RzcpError):
    status = 405
    code = "not-supported"


class NotAcceptable(RzcpError):
    status = 406
    code = "not-supported"


class Gone(RzcpError):
    status = 410
    code = "deleted"


class Conflict(RzcpError):
    status = 409
    code = "conflict"


class PreconditionFailed(Conflict):
    status = 412
    code = "conflict"


class PayloadTooLarge(RzcpError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(RzcpError):
    status = 415
    code = "not-supported"


class ServiceUnavailable(RzcpError):
    status = 503
    code = "transient"


def one_line(exc: BaseException) -> str:
    """An error as a command prints it: its first line; our ValueErrors are written for the operator,
    anything else is named by its kind."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return first if isinstance(exc, ValueError) and first else f"{type(exc).__name__}: {first}"
