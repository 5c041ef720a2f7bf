"""The token endpoint's two grants, as plain functions from the form's fields to the token response:

- `client_credentials` with a private_key_jwt client assertion (member systems, SMART Backend Services);
- `authorization_code` with PKCE (the patient app and the administrators' console), see `authorize`.

Every refusal is an OAuthError carrying the RFC 6749 error code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rzcp.auth import authorize
from rzcp.auth.assertions import ASSERTION_TYPE, authenticate_client
from rzcp.auth.scopes import ScopeError, ScopeSet
from rzcp.auth.service import AuthRuntime, Endpoints
from rzcp.errors import OAuthError

GRANT_TYPES = ("client_credentials", "authorization_code")


def _field(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"{name} is required")
    return value


async def token(auth: AuthRuntime, form: Mapping[str, str], endpoints: Endpoints) -> dict[str, Any]:
    grant_type = _field(form, "grant_type")
    if grant_type == "client_credentials":
        return await client_credentials(auth, form, endpoints)
    if grant_type == "authorization_code":
        return await authorize.redeem_code(auth, form, endpoints)
    raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported here")


async def client_credentials(
    auth: AuthRuntime, form: Mapping[str, str], endpoints: Endpoints
) -> dict[str, Any]:
    assertion_type = _field(form, "client_assertion_type")
    if assertion_type != ASSERTION_TYPE:
        raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = _field(form, "client_assertion")
    scope_text = form.get("scope", "").strip()
    if not scope_text:
        raise OAuthError("invalid_scope", "scope is required: the system/... scopes you need")
    try:
        requested = ScopeSet.parse(scope_text)
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    if requested.contexts() - {"system"} or requested.other:
        raise OAuthError("invalid_scope", "a member system may request system/... scopes only")
    client = await authenticate_client(auth.db, auth.client_keys, assertion, token_url=endpoints.token)
    if form.get("client_id") not in (None, "", client.client_id):
        raise OAuthError("invalid_client", "client_id does not match the client assertion")
    granted = ScopeSet.parse(client.scope, lenient=True).narrow(requested)
    if not granted.resource:
        raise OAuthError("invalid_scope", "none of the requested scopes is registered for this client")
    claims = {
        "kind": "system",
        "sub": client.client_id,
        "client_id": client.client_id,
        "ura": client.member_ura,
        "role": client.role,
        "scope": str(granted),
    }
    access_token, expires_in = await auth.tokens.issue(
        claims, issuer=endpoints.issuer, audience=endpoints.fhir_base
    )
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "scope": str(granted),
    }
