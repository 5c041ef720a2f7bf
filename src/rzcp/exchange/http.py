"""The one outgoing HTTP client of a gateway process, shared by every adapter.

httpx is the project's client API; underneath it runs aiohttp's connection handling through the
httpx-aiohttp transport, chosen by measurement (bench/README.md, "The outgoing HTTP transport": plain
httpx's pool costs 2 to 6 times the CPU per request under concurrency, encode/httpx#3215). Whoever
builds the adapters (the app's lifespan, a test, the demo) builds this client once, passes it in an
`AdapterContext` and closes it at the end. Tests hand in any `httpx.AsyncBaseTransport` (for example
`httpx.MockTransport`) instead.
"""

from __future__ import annotations

import httpx

import rzcp

#: Connections to all members together, and those kept open between calls.
DEFAULT_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30.0)
#: A ceiling only: each call also gets the member's own timeout, which is usually shorter.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = f"rzcp-gateway/{rzcp.__version__}"


def build_http_client(
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    limits: httpx.Limits = DEFAULT_LIMITS,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """A client with explicit limits and timeouts; over aiohttp unless a transport is given."""
    if transport is None:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncClient(
        transport=transport,
        limits=limits,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )
