"""The development identity provider, mounted only when RZCP_DEV_IDP=1 (refused in production).

Its form stands in for DigiD: a patient types a BSN (checked with the 11-check); a member of staff types
a user name (`dev:<name>` must have a role in RZCP_PERSON_ROLES) and, for the admin and auditor roles, the
second factor, the fixed development code shown on the form. It reports `acr` and `amr` as a real provider
would: `["pwd"]` for one factor, `["pwd", "otp"]` with the second.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rzcp.auth import authorize
from rzcp.auth.bsn import is_valid_bsn
from rzcp.auth.deps import AuthDep
from rzcp.auth.pages import PAGE_HEADERS

LOGIN_PATH = "/auth/dev-idp"
#: The development second factor. Known to everyone, which is why this provider never runs in production.
DEV_OTP = "246810"

router = APIRouter(tags=["auth"], include_in_schema=False)
_NO_STORE = {"Cache-Control": "no-store"}


def _form(login: str, audience: str, error: str | None = None) -> HTMLResponse:
    if audience == "patient":
        fields = '<label>BSN <input name="bsn" inputmode="numeric" autocomplete="off" required></label>'
    else:
        fields = (
            '<label>User name <input name="username" required></label>'
            f"<label>Second factor (development code {DEV_OTP}) "
            '<input name="otp" inputmode="numeric"></label>'
        )
    message = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    page = (
        "<!doctype html><title>RZCP development login</title><h1>Development login</h1>"
        "<p>This stands in for the region's identity provider. Never used in production.</p>"
        f'{message}<form method="post" action="{LOGIN_PATH}">'
        f'<input type="hidden" name="login" value="{html.escape(login)}">{fields}'
        '<button type="submit">Log in</button></form>'
    )
    return HTMLResponse(page, status_code=400 if error else 200, headers=PAGE_HEADERS)


@router.get(LOGIN_PATH)
async def login_form(request: Request, auth: AuthDep) -> Response:
    sealed = request.query_params.get("login", "")
    try:
        pending = authorize.open_pending(auth, sealed)
    except authorize.AuthorizeError as exc:
        return HTMLResponse(html.escape(exc.description), status_code=400, headers=PAGE_HEADERS)
    return _form(sealed, pending.audience)


@router.post(LOGIN_PATH)
async def login(request: Request, auth: AuthDep) -> Response:
    form = dict(parse_qsl((await request.body())[:8192].decode("utf-8", "replace")))
    sealed = form.get("login", "")
    try:
        pending = authorize.open_pending(auth, sealed)
    except authorize.AuthorizeError as exc:
        return HTMLResponse(html.escape(exc.description), status_code=400, headers=PAGE_HEADERS)
    if pending.audience == "patient":
        bsn = form.get("bsn", "").strip()
        if not is_valid_bsn(bsn):
            return _form(sealed, pending.audience, "That is not a valid BSN (it fails the 11-check).")
        identity = authorize.Identity(subject="dev-bsn", bsn=bsn, acr="basic", amr=("pwd",))
    else:
        username = form.get("username", "").strip()
        if not username:
            return _form(sealed, pending.audience, "Type your user name.")
        otp = form.get("otp", "").strip()
        if otp and otp != DEV_OTP:
            return _form(sealed, pending.audience, "The second factor is not right.")
        amr = ("pwd", "otp") if otp else ("pwd",)
        identity = authorize.Identity(
            subject=f"dev:{username}", bsn=None, acr="substantial" if otp else "basic", amr=amr
        )
    target = await authorize.issue_code(auth, request.app.state.runtime.registry, pending, identity)
    return RedirectResponse(target, status_code=303, headers=_NO_STORE)
