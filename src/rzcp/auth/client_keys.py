"""The public keys of member systems' clients: a JWKS registered with the client, or one fetched from its
jwks_uri. A URL is fetched only when its host is on the allow-list (RZCP_JWKS_ALLOWED_HOSTS), over the
process's one HTTP client, within a deadline and read no further than a size limit; one fetch per URL at a
time, shared by whoever asks meanwhile; the result (a failure too) is cached and fetched again when it
grows old or when an assertion names a kid it does not hold (at most once per few seconds per URL).
Keys named in a token's own header (`jku`, `x5u`, `jwk`, `x5c`) are never used or fetched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from joserfc.jwk import KeySet

from rzcp.auth.registry import Client, check_jwks
from rzcp.errors import OAuthError

MAX_JWKS_BYTES = 64 * 1024
#: A jwks_uri answers within this or not at all: the fetch holds a connection of the process's one
#: outgoing pool (the one pulls and deliveries use), so a slow host must not hold it long.
FETCH_SECONDS = 5.0
_REFETCH_AT_MOST_EVERY = 5.0


class ClientKeys:
    """Per process, and only a cache: which keys a client may use is what the database registers (a
    client's jwks_uri); the document behind it is kept for `cache_seconds`."""

    def __init__(self, http: httpx.AsyncClient, allowed_hosts: list[str], cache_seconds: int) -> None:
        self._http = http
        self._allowed = frozenset(allowed_hosts)
        self._cache_seconds = cache_seconds
        self._fetched: dict[str, tuple[float, dict[str, Any] | OAuthError]] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def key_set(self, client: Client, kid: str | None) -> KeySet:
        """The client's keys, holding `kid` if the client has such a key at all."""
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        assert client.jwks_url is not None
        document = await self._document(client.jwks_url, kid)
        return KeySet.import_key_set(document)  # type: ignore[arg-type]

    async def _document(self, url: str, kid: str | None) -> dict[str, Any]:
        """The cached document, or one fetch shared by every request that asks meanwhile. A failure is
        remembered as long as a success would be refetched at the earliest: anyone can send assertions
        naming a client, and each must not cost a fetch (found by a security test: ten at once against a
        slow host held ten connections for minutes)."""
        parts = urlsplit(url)
        if parts.hostname not in self._allowed or parts.scheme not in ("https", "http"):
            raise OAuthError(
                "invalid_client", "the client's jwks URL is not on the allow-list of this region"
            )
        now = time.monotonic()
        cached = self._fetched.get(url)
        if cached is not None:
            fetched_at, document = cached
            if isinstance(document, OAuthError):
                if now - fetched_at < _REFETCH_AT_MOST_EVERY:
                    raise document
            else:
                fresh = now - fetched_at < self._cache_seconds
                has_kid = kid is None or any(k.get("kid") == kid for k in document["keys"])
                if (fresh and has_kid) or now - fetched_at < _REFETCH_AT_MOST_EVERY:
                    return document
        pending = self._pending.get(url)
        if pending is None:
            pending = self._pending[url] = asyncio.ensure_future(self._fetch_and_keep(url))
            pending.add_done_callback(lambda _: self._pending.pop(url, None))
        return await asyncio.shield(pending)

    async def _fetch_and_keep(self, url: str) -> dict[str, Any]:
        try:
            document = await self._fetch(url)
        except OAuthError as exc:
            self._fetched[url] = (time.monotonic(), exc)
            raise
        self._fetched[url] = (time.monotonic(), document)
        return document

    async def _fetch(self, url: str) -> dict[str, Any]:
        unreadable = OAuthError("invalid_client", "the client's jwks URL did not answer with a JWKS")
        try:
            async with asyncio.timeout(FETCH_SECONDS):
                body = await self._read(url)
        except (httpx.HTTPError, TimeoutError):
            raise OAuthError("invalid_client", "the client's jwks URL could not be fetched") from None
        if body is None:
            raise unreadable
        try:
            return check_jwks(orjson.loads(body))
        except Exception:  # any malformed document: the client cannot authenticate with it
            raise unreadable from None

    async def _read(self, url: str) -> bytes | None:
        """The body of a 200 answer, read no further than the limit (None: another status, or too big)."""
        headers = {"Accept": "application/json"}
        async with self._http.stream("GET", url, headers=headers, follow_redirects=False) as response:
            if response.status_code != 200:
                return None
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    return None
            return bytes(body)
