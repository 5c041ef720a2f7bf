"""Request ids and Prometheus metrics, as one pure-ASGI middleware so it costs microseconds.

The request id is taken from `X-Request-ID` when the caller sends a sane one (so a member can follow its
own request through the region) and made up otherwise; it comes back in the response headers and is what
the audit trail records as the correlation id. Metrics carry the route template, never the concrete path,
so no resource id or patient identifier ends up in a label.
"""

from __future__ import annotations

import hmac
import os
import re
import time
import uuid
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rzcp.auth.bsn import holds_bsn

_SANE_ID = re.compile(r"[A-Za-z0-9._\-]{8,64}")
#: Answers that may carry patient data or the registry's: no cache (a browser's, a proxy's) keeps them,
#: unless the route said how it may be kept (the JWKS). A security test found them without.
_PRIVATE = ("/fhir", "/auth", "/admin/api")

REQUESTS = Counter("rzcp_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
#: A member that often has pulls waiting for no turn needs more turns (RZCP_MEMBER_MAX_PULLS) or processes.
NO_TURN = Counter(
    "rzcp_pull_no_turn_total", "Pulls that got no turn at a member within its timeout", ["member"]
)
LATENCY = Histogram(
    "rzcp_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        private = scope["path"].startswith(_PRIVATE)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                given = {name.lower() for name, _ in headers}  # what the route set stays, once
                headers.append((b"x-request-id", request_id.encode()))
                if b"x-content-type-options" not in given:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if private and b"cache-control" not in given:
                    headers.append((b"cache-control", b"no-store"))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            # The id is recorded in the audit trail: one that may hold a BSN is replaced, not kept.
            return text if _SANE_ID.fullmatch(text) and not holds_bsn(text) else None
    return None


def request_id(request: Request) -> str:
    state: Any = request.scope.get("state", {})
    return state.get("request_id", "")


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics; with RZCP_METRICS_TOKEN set, for the scraper holding it only."""
    token = request.app.state.runtime.settings.metrics_token
    if token is not None:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.encode(), token.encode()):
            return Response("metrics need the scraper's bearer token\n", status_code=401,
                            headers={"WWW-Authenticate": 'Bearer realm="rzcp-metrics"'})  # fmt: skip
    return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)


def _exposition() -> bytes:
    """The metrics of this process, or of every worker when `rzcp serve` runs several (each keeps its
    counts in the folder PROMETHEUS_MULTIPROC_DIR names; a scrape reaches one worker)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
