"""The gateway's access tokens: JWTs signed with its own key (RS384, with a kid), short-lived.

A token names who it was issued to and what it grants; whether that still holds (client not revoked,
member not suspended) is checked against the database on every request by `registry.ensure_live`, not
here. Verifying a signature costs about 250 µs, so a verified token's claims are kept in a small cache
for the rest of their lifetime: the bytes cannot change, and expiry is checked on every use.

    kind     system | patient | person
    sub      the client id (system), the patient's Patient id (patient), the provider's subject (person)
    client_id, ura, role           systems (and role, roles for persons)
    patient                        patient tokens: the Patient resource id, never the BSN
    scope, acr, amr, iat, exp, jti, iss, aud
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from rzcp.auth.keys import ALG, KeyRing
from rzcp.auth.principal import ISSUED_MS
from rzcp.errors import Unauthorized

_CACHE_SIZE = 4096
_MAX_TOKEN_BYTES = 8192


class InvalidToken(Unauthorized):
    """A bearer token that is missing, malformed, expired, or not for us; always answered with a 401."""

    def __init__(self, description: str) -> None:
        error = "invalid_request" if description == "no bearer token" else "invalid_token"
        header = f'Bearer realm="rzcp", error="{error}", error_description="{description}"'
        super().__init__(f"authentication failed: {description}", headers={"WWW-Authenticate": header})


class TokenService:
    def __init__(self, keys: KeyRing, lifetime: int) -> None:
        self.keys = keys
        self.lifetime = lifetime
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def issue(
        self, claims: dict[str, Any], *, issuer: str, audience: str, now: int | None = None
    ) -> tuple[str, int]:
        """A signed token carrying `claims`; returns it and its lifetime in seconds."""
        key = await self.keys.signing_key()
        moment = time.time() if now is None else float(now)
        issued = int(moment)
        payload = {
            **claims,
            "iss": issuer,
            "aud": audience,
            "iat": issued,
            # `iat` counts whole seconds; a suspension and a reinstatement within one second must still
            # tell the tokens issued before the one from those issued after the other (auth.registry._LIVE)
            ISSUED_MS: int(moment * 1000),
            "exp": issued + self.lifetime,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": ALG, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, payload, key, algorithms=[ALG]), self.lifetime

    async def verify(self, token: str, *, issuer: str, audience: str) -> dict[str, Any]:
        """The claims of a valid token of ours for `audience`; InvalidToken otherwise."""
        now = int(time.time())
        claims = self._verified.get(token)
        if claims is None:
            claims = await self._verify_signature(token)
            self._remember(token, claims)
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise InvalidToken("the token has expired")
        if claims.get("iss") != issuer or claims.get("aud") != audience:
            raise InvalidToken("the token was not issued for this server")
        return claims

    async def _verify_signature(self, token: str) -> dict[str, Any]:
        if len(token) > _MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidToken("the token is not a JWT")
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError):
            raise InvalidToken("the token is not a JWT") from None
        kid = header.get("kid")
        if header.get("alg") != ALG or not isinstance(kid, str):
            raise InvalidToken("the token is not signed by this server")
        key = await self.keys.public_key(kid)
        if key is None:
            raise InvalidToken("the token is not signed by this server")
        try:
            decoded = jwt.decode(token, key, algorithms=[ALG])
        except (JoseError, ValueError):
            raise InvalidToken("the token's signature is not valid") from None
        return dict(decoded.claims)

    def _remember(self, token: str, claims: dict[str, Any]) -> None:
        self._verified[token] = claims
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
