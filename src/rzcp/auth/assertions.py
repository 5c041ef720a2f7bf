"""Client authentication by a signed JWT (RFC 7523, as SMART Backend Services profiles it).

Checked in this order, each failure an `invalid_client`:
1. a compact JWS whose alg is RS384 or ES384 (`none`, HS*, anything else refused) and whose header names
   no keys (`jku`, `x5u`, `jwk`, `x5c` are refused, never fetched);
2. `iss` = `sub` = a registered client, not revoked, of an active member;
3. the signature, against that client's registered keys (by kid);
4. `aud` = this token endpoint's URL; `exp` present, in the future and at most five minutes ahead;
5. `jti` present and never seen before for this client; it is stored until the assertion expires, in the
   database, so a replay to another process or after a restart is refused too.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth.client_keys import ClientKeys
from rzcp.auth.keys import utcnow
from rzcp.auth.registry import CLIENT_ALGS, Client, get_client
from rzcp.auth.tables import assertion_jtis
from rzcp.errors import OAuthError
from rzcp.store.db import Database

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = 300
#: Tolerated difference between the client's clock and ours.
CLOCK_SKEW = 10
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_MAX_ASSERTION_BYTES = 16 * 1024


def _refuse(description: str) -> OAuthError:
    return OAuthError("invalid_client", description)


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(assertion) > _MAX_ASSERTION_BYTES or assertion.count(".") != 2:
        raise _refuse("client_assertion is not a signed JWT")
    try:
        compact = extract_compact(assertion.encode())
        header = compact.headers()
        claims = orjson.loads(compact.payload)
    except (JoseError, ValueError):
        raise _refuse("client_assertion is not a signed JWT") from None
    if not isinstance(claims, dict):
        raise _refuse("client_assertion's payload is not a JSON object")
    return header, claims


def _check_header(header: dict[str, Any]) -> str:
    alg = header.get("alg")
    if alg not in CLIENT_ALGS:
        raise _refuse(f"client_assertion alg {alg!r} is not accepted; sign with {' or '.join(CLIENT_ALGS)}")
    named = [h for h in _FORBIDDEN_HEADERS if h in header]
    if named:
        raise _refuse(
            f"client_assertion header may not carry {', '.join(named)}: keys come from the registration"
        )
    return str(alg)


def _check_claims(claims: dict[str, Any], token_url: str, now: int) -> None:
    aud = claims.get("aud")
    if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
        raise _refuse(f"client_assertion aud must be the token endpoint {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise _refuse("client_assertion has no exp")
    if exp <= now - CLOCK_SKEW:
        raise _refuse("client_assertion has expired")
    if exp > now + MAX_LIFETIME + CLOCK_SKEW:
        raise _refuse(f"client_assertion exp is more than {MAX_LIFETIME} seconds ahead")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + CLOCK_SKEW:
        raise _refuse("client_assertion is not valid yet (nbf)")
    iat = claims.get("iat")  # signed in the future: a clock that is off, or an assertion made in advance
    if isinstance(iat, int | float) and not isinstance(iat, bool) and iat > now + CLOCK_SKEW:
        raise _refuse("client_assertion iat is in the future: check the client's clock")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise _refuse("client_assertion needs a jti (at most 256 characters)")


async def authenticate_client(db: Database, keys: ClientKeys, assertion: str, *, token_url: str) -> Client:
    """The registered, active client that signed `assertion`; OAuthError(invalid_client) otherwise."""
    header, claims = _unverified(assertion)
    alg = _check_header(header)
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not iss or iss != sub:
        raise _refuse("client_assertion iss and sub must both be the client id")
    async with db.read() as conn:
        client = await get_client(conn, iss)
    if client is None:
        raise _refuse("unknown client")
    if not client.active:
        raise _refuse("the client is revoked or its member suspended")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _refuse("client_assertion header needs the kid of the signing key")
    try:
        key_set = await keys.key_set(client, kid)
    except (JoseError, ValueError, TypeError):  # keys registered before they were checked, or a bad jwks_uri
        raise _refuse("the client's registered keys cannot be used; register valid public keys") from None
    if not any(k.kid == kid for k in key_set.keys):
        raise _refuse("no key with that kid is registered for the client")
    try:
        verified = jwt.decode(assertion, key_set, algorithms=[alg])
    except (JoseError, ValueError):
        raise _refuse(
            "client_assertion's signature does not verify with the client's registered keys"
        ) from None
    now = int(time.time())
    _check_claims(dict(verified.claims), token_url, now)
    async with db.write() as conn:
        if not await _first_use(conn, client.client_id, str(claims["jti"]), int(claims["exp"])):
            raise _refuse("client_assertion jti was used before")
    return client


async def _first_use(conn: AsyncConnection, client_id: str, jti: str, exp: int) -> bool:
    """Record the jti; False when it was already there. Expired ids are removed on the way."""
    now = utcnow()
    await conn.execute(delete(assertion_jtis).where(assertion_jtis.c.expires_at < now))
    expires = now + timedelta(seconds=max(exp - int(time.time()), 0) + CLOCK_SKEW)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(assertion_jtis)
        .values(client_id=client_id, jti=jti, expires_at=expires)
        .on_conflict_do_nothing(index_elements=["client_id", "jti"])
    )
    result = await conn.execute(statement)
    return result.rowcount == 1
