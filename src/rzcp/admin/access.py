"""Who may do what in the console: role `admin` manages members and clients, role `auditor` reads the
trail; a person needs a login with a second factor for either (a system token has no factors to show:
its key is the proof). A person's roles all count; a system has its one role."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rzcp.auth.deps import CurrentPrincipal
from rzcp.auth.principal import Principal
from rzcp.auth.registry import ensure_live
from rzcp.errors import Forbidden


def roles_of(principal: Principal) -> tuple[str, ...]:
    if principal.kind == "person":
        return principal.roles
    if principal.kind == "system" and principal.role:
        return (principal.role,)
    return ()


def require(principal: Principal, role: str, console_client: str) -> Principal:
    """A person's token works here only when it was issued to the console itself: the same person's
    token for another app (found by a security test: one scoped to read the directory, for a third-party
    app) is that app's, not a console session."""
    if role not in roles_of(principal):
        raise Forbidden(f"this needs the {role} role", code="forbidden")
    if principal.kind == "person":
        if principal.client_id != console_client:
            raise Forbidden("this token was issued to another app, not to the console", code="forbidden")
        if not principal.has_second_factor:
            raise Forbidden("log in with a second factor to use the console", code="forbidden")
    return principal


async def _live(request: Request, principal: CurrentPrincipal) -> Principal:
    """The caller, refused when its client was revoked or its member suspended since the token was issued,
    or (a person) when the session was ended by logout."""
    async with request.app.state.runtime.db.query() as conn:
        await ensure_live(conn, principal)
    return principal


LoggedIn = Annotated[Principal, Depends(_live)]


def _console_client(request: Request) -> str:
    return str(request.app.state.runtime.settings.admin_console_client_id)


async def _admin(request: Request, principal: LoggedIn) -> Principal:
    return require(principal, "admin", _console_client(request))


async def _auditor(request: Request, principal: LoggedIn) -> Principal:
    return require(principal, "auditor", _console_client(request))


Admin = Annotated[Principal, Depends(_admin)]
Auditor = Annotated[Principal, Depends(_auditor)]
