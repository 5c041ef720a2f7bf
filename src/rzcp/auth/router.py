"""The OAuth 2 / SMART endpoints over HTTP: discovery, token, authorize, jwks, introspection. Each parses
the request, calls the domain (grants, authorize, registry) and renders; errors are RFC 6749 JSON with
`Cache-Control: no-store`."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rzcp.auth import authorize, grants
from rzcp.auth.authorize import public_clients
from rzcp.auth.deps import AuthDep, EndpointsDep, bearer_token
from rzcp.auth.devidp import LOGIN_PATH
from rzcp.auth.oidc import CALLBACK_PATH, COOKIE
from rzcp.auth.pages import PAGE_HEADERS
from rzcp.auth.principal import Principal
from rzcp.auth.registry import CLIENT_ALGS, end_session, ensure_live
from rzcp.auth.tokens import InvalidToken
from rzcp.errors import OAuthError

router = APIRouter(tags=["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 64 * 1024
CAPABILITIES = [
    "client-confidential-asymmetric",
    "client-public",
    "launch-standalone",
    "context-standalone-patient",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=NO_STORE)


async def oauth_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return _json({"error": exc.error, "error_description": exc.message}, exc.status)


def install_oauth_errors(app: FastAPI) -> None:
    app.add_exception_handler(OAuthError, oauth_error)


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, each parameter once (RFC 6749 §3.2)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "the body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthError("invalid_request", f"parameter {key} is given more than once")
        form[key] = value
    return form


@router.get("/fhir/.well-known/smart-configuration")
async def smart_configuration(auth: AuthDep, urls: EndpointsDep) -> Response:
    body = {
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "grant_types_supported": list(grants.GRANT_TYPES),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGS),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": [
            # what a member system needs (pull, announce, push), then the broader forms an admin's may take
            "system/*.rs",
            "system/Patient.c",
            "system/Bundle.c",
            "system/*.read",
            "system/*.write",
            "system/*.cruds",
            *str(auth.patient_scopes).split(),
            "user/*.cruds",
            "openid",
            "fhirUser",
            "launch/patient",
        ],
        "capabilities": CAPABILITIES,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/auth/token")
async def token(request: Request, auth: AuthDep, urls: EndpointsDep) -> Response:
    form = await read_form(request)
    issued = await grants.token(auth, form, urls)
    # The audit record of a grant names whom the token went to (client, member, role, token id), so that
    # the token's later requests can be traced back to it (NEN 7513: the person and the organisation).
    claims = await auth.tokens.verify(issued["access_token"], issuer=urls.issuer, audience=urls.fhir_base)
    request.state.principal = Principal.from_claims(claims)
    return _json(issued)


@router.post("/auth/revoke")
async def revoke(request: Request, auth: AuthDep, urls: EndpointsDep) -> Response:
    """RFC 7009, for the public clients' logout: a patient's or staff member's token (given with the
    client_id it was issued to) is refused from its next use, in every process. As the RFC asks, an
    unknown, expired or foreign token gets the same 200: the answer tells a caller nothing."""
    form = await read_form(request)
    subject = form.get("token")
    if not subject:
        raise OAuthError("invalid_request", "token is required")
    if form.get("client_id") not in public_clients(auth, urls):
        raise OAuthError("invalid_client", "unknown client_id")
    try:
        claims = await auth.tokens.verify(subject, issuer=urls.issuer, audience=urls.fhir_base)
    except InvalidToken:
        return Response(status_code=200, headers=NO_STORE)
    if claims.get("kind") not in ("patient", "person") or claims.get("client_id") != form.get("client_id"):
        return Response(status_code=200, headers=NO_STORE)
    async with auth.db.write() as conn:
        await end_session(conn, claims)
    return Response(status_code=200, headers=NO_STORE)


@router.get("/auth/jwks")
async def jwks(auth: AuthDep) -> Response:
    body = await auth.keys.jwks()
    return Response(
        orjson.dumps(body), media_type="application/jwk-set+json", headers={"Cache-Control": "max-age=60"}
    )


@router.post("/auth/introspect")
async def introspect(request: Request, auth: AuthDep, urls: EndpointsDep) -> Response:
    """RFC 7662, for a member system checking a token of its own organisation; any other token, a patient's
    included, is answered `active: false`."""
    caller = await auth.tokens.verify(bearer_token(request), issuer=urls.issuer, audience=urls.fhir_base)
    if caller.get("kind") != "system":
        raise OAuthError("invalid_client", "introspection is for member systems", status=401)
    try:
        async with auth.db.read() as conn:
            await ensure_live(conn, Principal.from_claims(caller))
    except InvalidToken:
        raise OAuthError(
            "invalid_client", "the client is revoked or its member suspended", status=401
        ) from None
    form = await read_form(request)
    subject = form.get("token")
    if not subject:
        raise OAuthError("invalid_request", "token is required")
    try:
        claims = await auth.tokens.verify(subject, issuer=urls.issuer, audience=urls.fhir_base)
        async with auth.db.read() as conn:
            await ensure_live(conn, Principal.from_claims(claims))
    except (InvalidToken, ValueError, KeyError):
        return _json({"active": False})
    if claims.get("ura") is None or claims.get("ura") != caller.get("ura"):
        # another member's or a patient's token: what it says (a patient's regional id, another
        # organisation's scopes) is not the caller's to learn
        return _json({"active": False})
    shown = (
        "scope",
        "client_id",
        "sub",
        "exp",
        "iat",
        "iss",
        "aud",
        "ura",
        "role",
        "roles",
        "patient",
        "acr",
        "amr",
    )
    return _json({"active": True, "token_type": "Bearer", **{k: claims[k] for k in shown if k in claims}})


def error_page(error: str, description: str, status: int = 400) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><title>Login error</title><h1>Cannot log in</h1>"
        f"<p>{html.escape(error)}: {html.escape(description)}</p>",
        status_code=status,
        headers=PAGE_HEADERS,
    )


@router.get("/auth/authorize")
async def authorize_endpoint(request: Request, auth: AuthDep, urls: EndpointsDep) -> Response:
    params = dict(request.query_params)
    try:
        pending = authorize.check_request(auth, params, urls)
    except authorize.AuthorizeError as exc:
        if exc.redirect is None:
            return error_page(exc.error, exc.description)
        return RedirectResponse(exc.redirect, status_code=302, headers=NO_STORE)
    sealed = authorize.seal_pending(auth, pending)
    if auth.settings.dev_idp:
        return RedirectResponse(f"{urls.root}{LOGIN_PATH}?login={sealed}", status_code=302, headers=NO_STORE)
    if auth.oidc is None:
        target = pending.error_redirect("temporarily_unavailable", "no identity provider is configured")
        return RedirectResponse(target, status_code=302, headers=NO_STORE)
    url, cookie = await auth.oidc.start(sealed, urls.root + CALLBACK_PATH)
    response = RedirectResponse(url, status_code=302, headers=NO_STORE)
    response.set_cookie(COOKIE, cookie, max_age=600, path="/auth", httponly=True, secure=True, samesite="lax")
    return response


@router.get(CALLBACK_PATH, include_in_schema=False)
async def oidc_callback(request: Request, auth: AuthDep, urls: EndpointsDep) -> Response:
    if auth.oidc is None:
        return error_page("temporarily_unavailable", "no identity provider is configured", 503)
    try:
        sealed, identity = await auth.oidc.finish(
            request.query_params, request.cookies.get(COOKIE), urls.root + CALLBACK_PATH
        )
        pending = authorize.open_pending(auth, sealed)
    except authorize.AuthorizeError as exc:
        return error_page(exc.error, exc.description)
    target = await authorize.issue_code(auth, request.app.state.runtime.registry, pending, identity)
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    response.delete_cookie(COOKIE, path="/auth")
    return response
