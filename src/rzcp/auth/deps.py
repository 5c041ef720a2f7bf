"""The request's caller, as FastAPI dependencies: `CurrentPrincipal` turns the bearer token and the
context headers into a Principal (401 with WWW-Authenticate when the token is missing or not valid)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request

from rzcp.auth.context import context_as_asked, parse_context
from rzcp.auth.principal import UNAUTHENTICATED_BENCH, Principal, RequestContext
from rzcp.auth.service import AuthRuntime, Endpoints
from rzcp.auth.tokens import InvalidToken
from rzcp.errors import BadRequest, RzcpError


async def get_auth(request: Request) -> AuthRuntime:
    return _auth(request)


def _auth(request: Request) -> AuthRuntime:
    return request.app.state.runtime.auth


AuthDep = Annotated[AuthRuntime, Depends(get_auth)]


async def endpoints_dep(request: Request) -> Endpoints:
    return endpoints(request)


def endpoints(request: Request) -> Endpoints:
    return Endpoints(request.app.state.runtime.fhir_base(str(request.base_url)))


EndpointsDep = Annotated[Endpoints, Depends(endpoints_dep)]


def bearer_token(request: Request) -> str:
    if len(request.headers.getlist("authorization")) > 1:  # which one is the caller? (a probe sent two)
        raise InvalidToken("more than one Authorization header")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("no bearer token")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    auth = _auth(request)
    settings = auth.settings
    policy = request.app.state.runtime.policy  # the region's purposes and emergency rule
    if not settings.auth_enabled:
        principal = UNAUTHENTICATED_BENCH
    else:
        urls = endpoints(request)
        claims = await auth.tokens.verify(bearer_token(request), issuer=urls.issuer, audience=urls.fhir_base)
        try:
            principal = Principal.from_claims(claims)
        except (KeyError, ValueError):
            raise InvalidToken("the token does not name its holder") from None
    default = "PATRQT" if principal.is_patient else "TREAT"
    try:
        context = parse_context(
            request.headers,
            allowed=policy.purposes,
            break_glass_enabled=policy.document.emergency.enabled,
            default=default,
        )
    except RzcpError:
        # A request refused for its purpose or practitioner is still the authenticated system's: the audit
        # record names it (NEN 7513), with the purpose it asked for (a refused ETREAT is an emergency
        # attempt an auditor looks for), never a purpose it did not ask for.
        request.state.principal = principal.with_context(
            _own(principal, context_as_asked(request.headers, default))
        )
        raise
    if not principal.is_system and context.acting_practitioner is not None:
        # A patient or a staff member acts as themself: a header naming someone else would put that
        # person in the audit record in their place (a security test blamed a real practitioner so).
        request.state.principal = principal.with_context(_own(principal, context))
        raise BadRequest(
            "X-Acting-Practitioner is for member systems acting on a professional's behalf; "
            "a person's own login already names who acts",
            code="value",
        )
    principal = principal.with_context(context)
    request.state.principal = principal  # for the audit record of this request
    return principal


def _own(principal: Principal, context: RequestContext) -> RequestContext:
    """The context with no practitioner for anyone but a member system, which alone acts for one."""
    return context if principal.is_system else replace(context, acting_practitioner=None)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
