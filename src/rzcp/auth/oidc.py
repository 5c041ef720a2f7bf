"""The production identity provider: an OpenID Connect provider named in configuration (a DigiD broker in
production), used through authlib's OAuth 2 client with PKCE.

`start` sends the browser to the provider with a fresh state, nonce and code verifier, kept in a sealed,
short-lived cookie beside the pending authorize request; `finish` checks the state against that cookie,
exchanges the code, and verifies the ID token (signature against the provider's JWKS, `iss`, `aud`,
`exp`, `nonce`). The BSN is read from the claim RZCP_OIDC_BSN_CLAIM and used only to find the patient.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from rzcp.auth.identity import AuthorizeError, Identity
from rzcp.auth.sealing import Sealer, SealError
from rzcp.settings import Settings

COOKIE = "rzcp_oidc"
CALLBACK_PATH = "/auth/oidc/callback"
_ID_TOKEN_ALGS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
_METADATA_SECONDS = 3600


class OidcProvider:
    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        assert settings.oidc_metadata_url and settings.oidc_client_id
        self._settings = settings
        self._http = http
        #: For the code exchange; tests put a fake provider here.
        self.transport = transport
        self._sealer = Sealer(settings.secret_key)
        self._metadata: tuple[float, dict[str, Any]] | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata[0] > _METADATA_SECONDS:
            response = await self._http.get(str(self._settings.oidc_metadata_url))
            response.raise_for_status()
            self._metadata = (time.monotonic(), response.json())
        return self._metadata[1]

    def _client(self, callback: str) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client  # only on the login path

        return AsyncOAuth2Client(
            client_id=self._settings.oidc_client_id,
            client_secret=self._settings.oidc_client_secret,
            redirect_uri=callback,
            scope="openid",
            code_challenge_method="S256",
            transport=self.transport,
        )

    async def start(self, sealed_login: str, callback: str) -> tuple[str, str]:
        """The provider's login URL and the cookie value that must come back with the callback."""
        meta = await self.metadata()
        state, nonce, verifier = (
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),
        )
        async with self._client(callback) as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
            )
        cookie = self._sealer.seal(
            "oidc", {"state": state, "nonce": nonce, "verifier": verifier, "login": sealed_login}, 600
        )
        return url, cookie

    async def finish(
        self, params: Mapping[str, str], cookie: str | None, callback: str
    ) -> tuple[str, Identity]:
        """The sealed pending login and who logged in, from the provider's redirect back to us."""
        try:
            saved = self._sealer.open("oidc", cookie or "")
        except SealError:
            raise AuthorizeError("access_denied", "the login session is missing or has expired") from None
        if params.get("state") != saved["state"]:
            raise AuthorizeError("access_denied", "the identity provider's answer does not match this login")
        if "error" in params or not params.get("code"):
            raise AuthorizeError("access_denied", "the identity provider did not log you in")
        meta = await self.metadata()
        try:
            async with self._client(callback) as client:
                token = await client.fetch_token(
                    meta["token_endpoint"], code=params["code"], code_verifier=saved["verifier"]
                )
        except Exception:  # the provider's answer is not ours to echo
            raise AuthorizeError("access_denied", "the identity provider did not confirm the login") from None
        claims = await self._id_token_claims(str(token.get("id_token", "")), meta, saved["nonce"])
        bsn = claims.get(self._settings.oidc_bsn_claim)
        amr = claims.get("amr")
        identity = Identity(
            subject=str(claims["sub"]),
            bsn=str(bsn) if bsn is not None else None,
            acr=str(claims["acr"]) if "acr" in claims else None,
            amr=tuple(str(a) for a in amr) if isinstance(amr, list) else (),
        )
        return str(saved["login"]), identity

    async def _id_token_claims(self, id_token: str, meta: dict[str, Any], nonce: str) -> dict[str, Any]:
        response = await self._http.get(meta["jwks_uri"])
        try:
            keys = KeySet.import_key_set(response.json())
            claims = dict(jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGS).claims)
        except (JoseError, ValueError):
            raise AuthorizeError("access_denied", "the identity provider's ID token is not valid") from None
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if (
            claims.get("iss") != meta.get("issuer")
            or self._settings.oidc_client_id not in audiences
            or not isinstance(claims.get("exp"), int)
            or claims["exp"] < time.time()
            or claims.get("nonce") != nonce
            or not claims.get("sub")
        ):
            raise AuthorizeError("access_denied", "the identity provider's ID token is not for this login")
        return claims
