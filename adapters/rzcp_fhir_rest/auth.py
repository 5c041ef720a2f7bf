"""How the adapter authenticates to a member's server: nothing, a static bearer token, or SMART Backend
Services (a client_credentials grant with a `private_key_jwt` assertion signed with authlib, POSTed to the
member's own token endpoint through the shared HTTP client). Tokens are cached per member and client until
shortly before they expire; one fetch at a time per member, the others wait for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from authlib.oauth2.rfc7523 import private_key_jwt_sign
from joserfc.jwk import Key, import_key

from rzcp.exchange.adapters import AuthKind, Member

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: A token is renewed this many seconds before it expires (or at 80% of a short lifetime).
RENEW_MARGIN = 30.0
#: The client assertion's lifetime (SMART: no more than five minutes).
ASSERTION_SECONDS = 300


def _signing_key(private_key: str, algorithm: str) -> Key:
    """The key object (authlib signs with joserfc keys): PEM or JWK JSON, of the algorithm's type."""
    data: str | dict[str, Any] = private_key
    if private_key.lstrip().startswith("{"):
        data = orjson.loads(private_key)
    return import_key(data, "RSA" if algorithm.startswith("RS") else "EC")


class AuthFailed(Exception):
    """The member's token endpoint did not give a token; the message says why, without secrets."""


@dataclass
class _Token:
    value: str
    renew_at: float


class MemberCredentials:
    def __init__(self, http: httpx.AsyncClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.http = http
        self.clock = clock
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    async def headers(self, member: Member, budget: float) -> dict[str, str]:
        auth = member.auth
        if auth.kind is AuthKind.NONE:
            return {}
        if auth.kind is AuthKind.BEARER:
            return {"Authorization": f"Bearer {auth.token}"}
        return {"Authorization": f"Bearer {await self._smart_token(member, budget)}"}

    def invalidate(self, member: Member) -> None:
        """Forget the member's token (after a 401: it may have been revoked or the server restarted)."""
        self._tokens.pop(self._key(member), None)

    @staticmethod
    def _key(member: Member) -> tuple[str, ...]:
        """A token is for one server, client and key: after an operator moves the member or rotates the
        key (`rzcp members update`), every process asks a new one (found by review)."""
        auth = member.auth
        return (member.ura, member.base_url, auth.token_url or "", auth.client_id or "", auth.key_id or "")

    async def _smart_token(self, member: Member, budget: float) -> str:
        key = self._key(member)
        cached = self._tokens.get(key)
        if cached is not None and self.clock() < cached.renew_at:
            return cached.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and self.clock() < cached.renew_at:
                return cached.value
            token = await self._fetch(member, budget)
            self._tokens[key] = token
            return token.value

    async def _fetch(self, member: Member, budget: float) -> _Token:
        auth = member.auth
        assert auth.token_url and auth.client_id and auth.private_key  # checked by MemberAuth
        header = {"typ": "JWT", **({"kid": auth.key_id} if auth.key_id else {})}
        assertion = private_key_jwt_sign(
            _signing_key(auth.private_key, auth.algorithm),
            auth.client_id,
            auth.token_url,
            alg=auth.algorithm,
            header=header,
            expires_in=ASSERTION_SECONDS,
        )
        form = {
            "grant_type": "client_credentials",
            "scope": auth.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        try:
            response = await self.http.post(
                auth.token_url, data=form, headers={"Accept": "application/json"}, timeout=budget
            )
        except httpx.HTTPError as exc:
            raise AuthFailed(f"token endpoint not reachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise AuthFailed(f"token endpoint answered {response.status_code}")
        try:
            body = orjson.loads(response.content)
            value = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise AuthFailed("token endpoint answered without a usable access_token") from None
        kind = str(body.get("token_type", "bearer")).lower()
        if not isinstance(value, str) or not value or kind != "bearer":
            raise AuthFailed("token endpoint answered without a bearer access_token")
        margin = min(RENEW_MARGIN, lifetime * 0.2)
        return _Token(value, self.clock() + max(0.0, lifetime - margin))
