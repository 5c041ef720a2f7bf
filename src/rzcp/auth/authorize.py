"""Patient (and administrator) login: OAuth 2 authorization code with PKCE, S256 only.

1. `check_request`: the authorize endpoint's parameters. An unknown client or a redirect URI that is not
   registered is answered on the gateway's own page (never redirected to); every other error goes back to
   the redirect URI with `error` and the exact `state`.
2. The user logs in at the identity provider (OpenID Connect in production, `devidp` in development); the
   pending request travels sealed (`Sealer`) through that round trip.
3. `issue_code`: who logged in becomes the claims of the token to come (a patient's Patient id, found or
   created from the BSN; a person's role); the code is random, stored hashed, single use, 60 s.
4. `redeem_code`: the token endpoint's authorization_code grant: the code (unused, unexpired, same client
   and redirect URI) and the PKCE verifier whose S256 hash is the challenge.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import select, update

from rzcp.auth.bsn import is_valid_bsn
from rzcp.auth.identity import AuthorizeError, Identity
from rzcp.auth.keys import utcnow
from rzcp.auth.patients import patient_for_bsn
from rzcp.auth.principal import SECOND_FACTORS
from rzcp.auth.scopes import ScopeError, ScopeSet
from rzcp.auth.sealing import Sealer, SealError
from rzcp.auth.service import AuthRuntime, Endpoints
from rzcp.auth.tables import codes
from rzcp.errors import OAuthError
from rzcp.fhir.search.definitions import SearchRegistry

CODE_SECONDS = 60
LOGIN_SECONDS = 600
_CHALLENGE = re.compile(r"[A-Za-z0-9_\-]{43}")
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_PERSON_MAX = {
    # least privilege: the registry's directory, and a patient's consents (recorded on their documented
    # request, which needs their Patient); no clinical data, no browsing of other types
    "admin": ScopeSet.parse("user/Organization.rs user/Endpoint.rs user/Patient.rs user/Consent.cruds"),
    "auditor": ScopeSet.parse("user/AuditEvent.rs"),
    "member": ScopeSet.parse("user/Organization.rs user/Endpoint.rs"),
}
#: What any member of staff may be granted, before their roles are known (at the authorize request).
_STAFF_MAX = ScopeSet(tuple(dict.fromkeys(s for role in _PERSON_MAX.values() for s in role.resource)))
_OTHER_SCOPES = ScopeSet(other=("openid", "fhirUser", "launch/patient"))


@dataclass(frozen=True)
class PendingLogin:
    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scope: str
    #: "patient" or "person": who is asked to log in.
    audience: str

    def error_redirect(self, error: str, description: str) -> str:
        return _with_query(self.redirect_uri, error=error, error_description=description, state=self.state)


def _with_query(uri: str, **params: str) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


@dataclass(frozen=True)
class PublicClient:
    """A public (PKCE) client: the patient app (patients; staff too, for third-party staff apps) or the
    administrators' console (staff only). The gateway's own pages are always registered at its own root."""

    redirect_uris: frozenset[str]
    contexts: frozenset[str]


def public_clients(auth: AuthRuntime, endpoints: Endpoints) -> dict[str, PublicClient]:
    settings = auth.settings
    return {
        settings.patient_app_client_id: PublicClient(
            frozenset([*settings.patient_app_redirect_uris, f"{endpoints.root}/app/"]),
            frozenset({"patient", "user"}),
        ),
        settings.admin_console_client_id: PublicClient(
            frozenset({f"{endpoints.root}/admin/"}), frozenset({"user"})
        ),
    }


def check_request(auth: AuthRuntime, params: Mapping[str, str], endpoints: Endpoints) -> PendingLogin:
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    client = public_clients(auth, endpoints).get(client_id)
    if client is None:
        raise AuthorizeError("invalid_client", "unknown client_id")
    if redirect_uri not in client.redirect_uris:
        raise AuthorizeError("invalid_request", "redirect_uri is not registered for this client")
    state = params.get("state", "")

    def fail(error: str, description: str) -> AuthorizeError:
        return AuthorizeError(
            error,
            description,
            _with_query(redirect_uri, error=error, error_description=description, state=state),
        )

    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be code")
    if not state:
        raise fail("invalid_request", "state is required")
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "PKCE with code_challenge_method=S256 is required (plain is refused)")
    challenge = params.get("code_challenge", "")
    if not _CHALLENGE.fullmatch(challenge):
        raise fail("invalid_request", "code_challenge must be the base64url SHA-256 of the code verifier")
    aud = params.get("aud")
    if aud is not None and aud.rstrip("/") != endpoints.fhir_base:
        raise fail("invalid_request", f"aud must be this FHIR server, {endpoints.fhir_base}")
    try:
        requested = ScopeSet.parse(params.get("scope", ""))
    except ScopeError as exc:
        raise fail("invalid_scope", str(exc)) from None
    contexts = requested.contexts()
    if not contexts <= client.contexts:
        raise fail(
            "invalid_scope", f"this client asks for {' or '.join(sorted(client.contexts))}/ scopes only"
        )
    if contexts == {"patient"}:
        granted, audience = auth.patient_scopes.narrow(requested), "patient"
    elif contexts == {"user"}:
        granted, audience = _STAFF_MAX.narrow(requested), "person"  # the person's roles narrow it at login
    else:
        raise fail("invalid_scope", "ask for patient/... scopes (patients) or user/... scopes (staff)")
    if not granted.resource:
        raise fail("invalid_scope", "none of the requested scopes can be granted")
    other = _OTHER_SCOPES.narrow(ScopeSet(other=requested.other)).other
    scope = str(ScopeSet(granted.resource, other))
    return PendingLogin(client_id, redirect_uri, state, challenge, scope, audience)


def seal_pending(auth: AuthRuntime, pending: PendingLogin) -> str:
    return Sealer(auth.settings.secret_key).seal("login", asdict(pending), LOGIN_SECONDS)


def open_pending(auth: AuthRuntime, sealed: str) -> PendingLogin:
    try:
        return PendingLogin(**Sealer(auth.settings.secret_key).open("login", sealed))
    except (SealError, TypeError):
        raise AuthorizeError("invalid_request", "the login took too long or was tampered with") from None


async def issue_code(
    auth: AuthRuntime, registry: SearchRegistry, pending: PendingLogin, identity: Identity
) -> str:
    """Record the login and return the redirect back to the client, with the code and the state."""
    claims: dict[str, Any] = {"acr": identity.acr, "amr": list(identity.amr)}
    if pending.audience == "patient":
        if identity.bsn is None or not is_valid_bsn(identity.bsn):
            return pending.error_redirect("access_denied", "the identity provider gave no valid BSN")
        async with auth.db.write() as conn:
            patient_id = await patient_for_bsn(
                conn, registry, identity.bsn, bsn_secret=auth.settings.bsn_secret
            )
        claims.update(kind="patient", sub=patient_id, patient=patient_id)
        scope = pending.scope
    else:
        roles = auth.settings.person_roles.get(identity.subject)
        if not roles:
            return pending.error_redirect("access_denied", "this person has no role in the region")
        role = _primary(roles)
        if role in ("admin", "auditor") and not SECOND_FACTORS.intersection(identity.amr):
            return pending.error_redirect(
                "access_denied", f"the {role} role needs a login with a second factor"
            )
        requested = ScopeSet.parse(pending.scope, lenient=True)
        granted_resource: list[Any] = []
        for each in roles:
            granted_resource.extend(_PERSON_MAX[each].narrow(requested).resource)
        granted = ScopeSet(tuple(dict.fromkeys(granted_resource)))
        if not granted.resource:
            return pending.error_redirect("access_denied", f"the {role} role cannot be granted these scopes")
        claims.update(kind="person", sub=identity.subject, role=role, roles=sorted(set(roles)))
        scope = str(granted)
    code = secrets.token_urlsafe(32)
    async with auth.db.write() as conn:
        await conn.execute(
            codes.insert().values(
                code_hash=_hash(code),
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                scope=scope,
                claims=orjson.dumps(claims).decode(),
                expires_at=utcnow() + timedelta(seconds=CODE_SECONDS),
            )
        )
    return _with_query(pending.redirect_uri, code=code, state=pending.state)


def _primary(roles: list[str]) -> str:
    """The role a token names first: admin over auditor over member (`roles` carries them all)."""
    return next(role for role in ("admin", "auditor", "member") if role in roles)


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def redeem_code(auth: AuthRuntime, form: Mapping[str, str], endpoints: Endpoints) -> dict[str, Any]:
    code = form.get("code")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    verifier = form.get("code_verifier")
    if not verifier:
        raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
    if form.get("client_id") not in public_clients(auth, endpoints):
        raise OAuthError("invalid_client", "unknown client_id")
    async with auth.db.write() as conn:
        row = (await conn.execute(select(codes).where(codes.c.code_hash == _hash(code)))).first()
        # The code is spent by this attempt whatever follows: a wrong verifier cannot be retried.
        burned = await conn.execute(
            update(codes)
            .where(codes.c.code_hash == _hash(code), codes.c.used_at.is_(None))
            .values(used_at=utcnow())
        )
    if row is None:
        raise OAuthError("invalid_grant", "unknown code")
    if burned.rowcount != 1:
        raise OAuthError("invalid_grant", "the code was already used")
    if row.expires_at < utcnow():
        raise OAuthError("invalid_grant", "the code has expired")
    if row.client_id != form.get("client_id") or row.redirect_uri != form.get("redirect_uri"):
        raise OAuthError("invalid_grant", "client_id and redirect_uri must be those of the authorize request")
    if (
        verifier == row.code_challenge
        or not _VERIFIER.fullmatch(verifier)
        or s256(verifier) != row.code_challenge
    ):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    claims = {**orjson.loads(row.claims), "client_id": row.client_id, "scope": row.scope}
    access_token, expires_in = await auth.tokens.issue(
        claims, issuer=endpoints.issuer, audience=endpoints.fhir_base
    )
    response: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "scope": row.scope,
    }
    if claims.get("patient"):
        response["patient"] = claims["patient"]
    return response
