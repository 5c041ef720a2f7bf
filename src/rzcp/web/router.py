"""Serves the two web apps as static files, with the headers that keep a page holding a patient's token safe.

The pages carry no secrets and need no build step: plain HTML, CSS and ES modules shipped in the package.
The Content-Security-Policy allows scripts and connections to this origin only, so an injected string can
neither run nor send a token elsewhere; `no-referrer` keeps the authorization code in the callback URL from
leaking to other sites.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


class _Secured:
    """Adds the security headers to every response of the wrapped static files app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode().lower() not in SECURITY_HEADERS
                ]
                headers.extend((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items())
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    """`/app/` and `/admin/` (each its index.html), and `/web/common/` for what both share."""
    for prefix, folder in (("/app", "app"), ("/admin", "admin")):
        app.add_api_route(prefix, _redirect_to(prefix + "/"), include_in_schema=False)
        app.mount(prefix, _Secured(StaticFiles(directory=STATIC / folder, html=True)), name=folder)
    app.mount("/web/common", _Secured(StaticFiles(directory=STATIC / "common")), name="web-common")


def _redirect_to(target: str):  # type: ignore[no-untyped-def]
    async def redirect() -> RedirectResponse:
        return RedirectResponse(target, status_code=308)

    return redirect
