"""The one outgoing HTTP client of a gateway process, shared by every adapter.

httpx is the project's client API; underneath it runs aiohttp's connection handling through the
httpx-aiohttp transport, chosen by measurement (bench/README.md, "The outgoing HTTP transport": plain
httpx's pool costs 2 to 6 times the CPU per request under concurrency, encode/httpx#3215). Whoever
builds the adapters (the app's lifespan, a test, the demo) builds this client once, passes it in an
`AdapterContext` and closes it at the end. Tests hand in any `httpx.AsyncBaseTransport` (for example
`httpx.MockTransport`) instead.

The client keeps no cookies: it calls many members on behalf of many requesters, so a cookie one member
set in answer to one requester's pull must never ride along with the next call; and not keeping them spares
httpx's cookie-jar bookkeeping on every response (bench/README.md, "The exchange: a pull through the
gateway").

`GatewayClient.aiohttp_session()` hands the adapters' hot path (a member search) the aiohttp session under
the transport, sharing its connection pool: httpx's request and response objects cost more CPU per call
than aiohttp's whole client (bench/README.md, "The exchange: a pull through the gateway").
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

import rzcp
from rzcp.addresses import ResolverRefusingNoServers

#: Connections to all members together, and those kept open between calls.
DEFAULT_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30.0)
#: A ceiling only: each call also gets the member's own timeout, which is usually shorter.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = f"rzcp-gateway/{rzcp.__version__}"


class _NoCookies(httpx.Cookies):
    """An empty jar that stays empty: `Set-Cookie` from a member is ignored, nothing is sent back."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class GatewayClient(httpx.AsyncClient):
    """httpx.AsyncClient without a cookie jar (see the module's docstring)."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._no_cookies = _NoCookies()
        self._aiohttp = transport if isinstance(transport, AiohttpTransport) else None

    def aiohttp_session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session under this client (made on first use, inside the event loop, and then
        shared with httpx's calls); None when another transport was handed in."""
        transport = self._aiohttp
        if transport is None:
            return None
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        return transport.client

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, value: object) -> None:
        if value:
            raise TypeError("the gateway's HTTP client keeps no cookies")


def _aiohttp_transport(limits: httpx.Limits) -> AiohttpTransport:
    """httpx-aiohttp's transport, with a session made as it would make it but with a cookie jar that
    keeps nothing (aiohttp's own jar would keep a member's cookies for every later call)."""
    transport = AiohttpTransport(limits=limits, trust_env=False)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=transport.ssl_context,
            resolver=ResolverRefusingNoServers(),  # a member's name may come to point at one later
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    transport.client = session
    return transport


def build_http_client(
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    limits: httpx.Limits = DEFAULT_LIMITS,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """A client with explicit limits and timeouts; over aiohttp unless a transport is given."""
    if transport is None:
        transport = _aiohttp_transport(limits)
    return GatewayClient(
        transport=transport,
        limits=limits,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )
