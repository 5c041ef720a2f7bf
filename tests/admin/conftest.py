"""Fixtures of the console's tests: a gateway with the development identity provider, and the console's
people logged in through it (authorization code with PKCE, as the console page does)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest_asyncio

from rzcp.app import create_app
from rzcp.auth.authorize import s256
from rzcp.auth.service import Endpoints
from rzcp.exchange.locator import Locator
from rzcp.exchange.secrets import BsnProtector
from rzcp.membersim.bsn import derive_test_bsn
from tests.conftest import BASE, make_settings

CONSOLE = "rzcp-admin-console"
REDIRECT = f"{BASE}/admin/"
PEOPLE = {"dev:chief": "admin,auditor", "dev:ada": "admin", "dev:otto": "auditor", "dev:mia": "member"}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def console_app(app: Any, database_url: str) -> Any:
    """A gateway on the suite's (migrated) database with the development identity provider."""
    return create_app(
        make_settings(database_url, dev_idp=True, person_roles=PEOPLE, jwks_allowed_hosts=["keys.example"])
    )


async def person_token(app: Any, user: str, *, otp: bool = True) -> str:
    """Log in to the console as `dev:<user>` through the development identity provider."""
    verifier = secrets.token_urlsafe(48)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as browser:
        start = await browser.get(
            "/auth/authorize",
            params={
                "response_type": "code",
                "client_id": CONSOLE,
                "redirect_uri": REDIRECT,
                "scope": "user/*.cruds user/AuditEvent.rs openid",
                "state": "s",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
                "aud": f"{BASE}/fhir",
            },
        )
        assert start.status_code == 302, start.text
        sealed = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
        form = {"login": sealed, "username": user, "otp": "246810" if otp else ""}
        done = await browser.post("/auth/dev-idp", data=form)
        query = parse_qs(urlsplit(done.headers["location"]).query)
        assert "code" in query, query
        token = await browser.post(
            "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT,
                "client_id": CONSOLE,
                "code_verifier": verifier,
            },
        )
        assert token.status_code == 200, token.text
        return token.json()["access_token"]


async def minted_person_token(
    app: Any,
    subject: str,
    roles: list[str],
    amr: list[str],
    *,
    client_id: str = CONSOLE,
    scope: str = "user/*.cruds",
) -> str:
    """A person token as the console would never get it (admin without a second factor, another app's)."""
    urls = Endpoints(f"{BASE}/fhir")
    claims = {
        "kind": "person",
        "sub": subject,
        "role": roles[0],
        "roles": roles,
        "amr": amr,
        "scope": scope,
        "client_id": client_id,
        "exp": int(time.time()) + 300,
    }
    token, _ = await app.state.runtime.auth.tokens.issue(claims, issuer=urls.issuer, audience=urls.fhir_base)
    return token


def as_bearer(app: Any, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=headers)


_TOKENS: dict[tuple[int, str], str] = {}


async def _console(app: Any, user: str) -> AsyncIterator[httpx.AsyncClient]:
    key = (id(app), user)
    if key not in _TOKENS:
        _TOKENS[key] = await person_token(app, user)
    async with as_bearer(app, _TOKENS[key]) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def chief(console_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An admin who is an auditor too, with a second factor."""
    async for http in _console(console_app, "chief"):
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def ada(console_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An admin only."""
    async for http in _console(console_app, "ada"):
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def otto(console_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An auditor only."""
    async for http in _console(console_app, "otto"):
        yield http


async def new_patient(app: Any) -> tuple[str, str]:
    """(BSN, regional Patient id) of a patient new to the locator (the database is shared)."""
    runtime = app.state.runtime
    bsn = derive_test_bsn(uuid.uuid4().hex, set())
    async with runtime.db.write() as conn:
        patient = await Locator(BsnProtector(runtime.settings.bsn_secret)).regional_patient(
            conn, runtime.registry, bsn
        )
    return bsn, patient
