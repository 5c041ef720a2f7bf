"""The production login path: an OpenID Connect provider (here a fake one behind httpx.MockTransport)
sends the patient back; the gateway checks state, exchanges the code with PKCE, verifies the ID token and
issues its own code to the app."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest_asyncio
from joserfc import jwt

from rzcp.app import create_app
from rzcp.auth.authorize import s256
from tests.auth.test_patient_login import REDIRECT, authorize_params, new_bsn, redeem
from tests.conftest import BASE, make_settings, new_key

ISSUER = "https://idp.example"


class FakeProvider:
    def __init__(self) -> None:
        self.key = new_key()
        self.nonce = ""
        self.bsn = new_bsn()
        self.issuer = ISSUER
        self.verifiers: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
            })  # fmt: skip
        if request.url.path == "/jwks":
            return httpx.Response(200, json={"keys": [self.key.as_dict(private=False)]})
        if request.url.path == "/token":
            form = parse_qs(request.content.decode())
            self.verifiers.append(form["code_verifier"][0])
            now = int(time.time())
            claims = {
                "iss": self.issuer, "aud": "rzcp-gateway", "sub": "digid-123", "exp": now + 60, "iat": now,
                "nonce": self.nonce, "bsn": self.bsn, "acr": "substantial", "amr": ["pwd", "otp"],
            }  # fmt: skip
            id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
            return httpx.Response(
                200, json={"access_token": "x", "token_type": "Bearer", "id_token": id_token}
            )
        return httpx.Response(404)


@pytest_asyncio.fixture(loop_scope="session")
async def oidc_gateway(app: Any, database_url: str) -> Any:
    settings = make_settings(
        database_url,
        patient_app_redirect_uris=[REDIRECT],
        oidc_metadata_url=f"{ISSUER}/.well-known/openid-configuration",
        oidc_client_id="rzcp-gateway",
        oidc_client_secret="s3cret",
    )
    gateway = create_app(settings)
    provider = FakeProvider()
    transport = httpx.MockTransport(provider.handle)
    oidc = gateway.state.runtime.auth.oidc
    oidc._http = httpx.AsyncClient(transport=transport)
    oidc.transport = transport
    return gateway, provider


async def start_login(
    http: httpx.AsyncClient, provider: FakeProvider, verifier: str
) -> tuple[str, dict[str, str]]:
    params = authorize_params(s256(verifier))
    response = await http.get("/auth/authorize", params=params)
    assert response.status_code == 302, response.text
    at_idp = urlsplit(response.headers["location"])
    assert f"{at_idp.scheme}://{at_idp.netloc}{at_idp.path}" == f"{ISSUER}/authorize"
    query = {k: v[0] for k, v in parse_qs(at_idp.query).items()}
    assert query["code_challenge_method"] == "S256" and query["client_id"] == "rzcp-gateway"
    provider.nonce = query["nonce"]
    return response.cookies["rzcp_oidc"], {**query, "app_state": params["state"]}


async def test_login_through_the_openid_provider(oidc_gateway: Any) -> None:
    gateway, provider = oidc_gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url=BASE) as http:
        verifier = secrets.token_urlsafe(48)
        cookie, query = await start_login(http, provider, verifier)
        back = await http.get(
            "/auth/oidc/callback",
            params={"code": "idp-code", "state": query["state"]},
            cookies={"rzcp_oidc": cookie},
        )
        assert back.status_code == 303, back.text
        app_query = parse_qs(urlsplit(back.headers["location"]).query)
        assert app_query["state"] == [query["app_state"]]
        token = await redeem(http, app_query["code"][0], verifier)
        assert token.status_code == 200, token.text
        assert token.json()["patient"] and provider.bsn not in token.text
        assert provider.verifiers and provider.verifiers[-1] != verifier  # its own PKCE pair with the IdP


async def test_state_mismatch_wrong_nonce_and_wrong_issuer_are_refused(oidc_gateway: Any) -> None:
    gateway, provider = oidc_gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url=BASE) as http:
        cookie, query = await start_login(http, provider, secrets.token_urlsafe(48))
        bad_state = await http.get(
            "/auth/oidc/callback",
            params={"code": "c", "state": uuid.uuid4().hex},
            cookies={"rzcp_oidc": cookie},
        )
        assert bad_state.status_code == 400
        no_cookie = await http.get("/auth/oidc/callback", params={"code": "c", "state": query["state"]})
        assert no_cookie.status_code == 400
        provider.nonce = "replayed-nonce"
        wrong_nonce = await http.get(
            "/auth/oidc/callback",
            params={"code": "c", "state": query["state"]},
            cookies={"rzcp_oidc": cookie},
        )
        assert wrong_nonce.status_code == 400
        cookie, query = await start_login(http, provider, secrets.token_urlsafe(48))
        provider.issuer = "https://evil.example"
        try:
            wrong_issuer = await http.get(
                "/auth/oidc/callback",
                params={"code": "c", "state": query["state"]},
                cookies={"rzcp_oidc": cookie},
            )
        finally:
            provider.issuer = ISSUER
        assert wrong_issuer.status_code == 400
