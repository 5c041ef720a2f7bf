"""The public keys of member systems' clients: a JWKS registered with the client, or one fetched from its
jwks_uri. A URL is fetched only when its host is on the allow-list (RZCP_JWKS_ALLOWED_HOSTS), over the
process's one HTTP client, with a timeout and a size limit; the result is cached and fetched again when
it grows old or when an assertion names a kid it does not hold (at most once per few seconds per URL).
Keys named in a token's own header (`jku`, `x5u`, `jwk`, `x5c`) are never used or fetched.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from joserfc.jwk import KeySet

from rzcp.auth.registry import Client, check_jwks
from rzcp.errors import OAuthError

MAX_JWKS_BYTES = 64 * 1024
_REFETCH_AT_MOST_EVERY = 5.0


class ClientKeys:
    def __init__(self, http: httpx.AsyncClient, allowed_hosts: list[str], cache_seconds: int) -> None:
        self._http = http
        self._allowed = frozenset(allowed_hosts)
        self._cache_seconds = cache_seconds
        self._fetched: dict[str, tuple[float, dict[str, Any]]] = {}

    async def key_set(self, client: Client, kid: str | None) -> KeySet:
        """The client's keys, holding `kid` if the client has such a key at all."""
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        assert client.jwks_url is not None
        document = await self._document(client.jwks_url, kid)
        return KeySet.import_key_set(document)  # type: ignore[arg-type]

    async def _document(self, url: str, kid: str | None) -> dict[str, Any]:
        now = time.monotonic()
        cached = self._fetched.get(url)
        if cached is not None:
            fetched_at, document = cached
            fresh = now - fetched_at < self._cache_seconds
            has_kid = kid is None or any(k.get("kid") == kid for k in document["keys"])
            if (fresh and has_kid) or now - fetched_at < _REFETCH_AT_MOST_EVERY:
                return document
        document = await self._fetch(url)
        self._fetched[url] = (now, document)
        return document

    async def _fetch(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        if parts.hostname not in self._allowed or parts.scheme not in ("https", "http"):
            raise OAuthError(
                "invalid_client", "the client's jwks URL is not on the allow-list of this region"
            )
        try:
            response = await self._http.get(
                url, headers={"Accept": "application/json"}, follow_redirects=False
            )
        except httpx.HTTPError:
            raise OAuthError("invalid_client", "the client's jwks URL could not be fetched") from None
        if response.status_code != 200 or len(response.content) > MAX_JWKS_BYTES:
            raise OAuthError("invalid_client", "the client's jwks URL did not answer with a JWKS")
        try:
            return check_jwks(orjson.loads(response.content))
        except Exception:  # any malformed document: the client cannot authenticate with it
            raise OAuthError("invalid_client", "the client's jwks URL did not answer with a JWKS") from None
