"""What one process holds for auth: its key ring, token service and client-key cache. Built with the
Runtime; every decision still reads the database (clients, members, jtis, codes, keys)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from rzcp.auth.client_keys import ClientKeys
from rzcp.auth.keys import KeyRing
from rzcp.auth.oidc import OidcProvider
from rzcp.auth.scopes import ScopeSet
from rzcp.auth.tokens import TokenService
from rzcp.settings import Settings
from rzcp.store.db import Database


@dataclass
class AuthRuntime:
    settings: Settings
    db: Database
    keys: KeyRing
    tokens: TokenService
    client_keys: ClientKeys
    patient_scopes: ScopeSet
    #: The production identity provider, when configured.
    oidc: OidcProvider | None = None

    @classmethod
    def build(cls, settings: Settings, db: Database, http: httpx.AsyncClient) -> AuthRuntime:
        keys = KeyRing(db, settings.secret_key, settings.access_token_seconds)
        patient_scopes = ScopeSet.parse(settings.patient_scopes)
        if patient_scopes.contexts() - {"patient"}:
            raise ValueError("RZCP_PATIENT_SCOPES may hold patient/... scopes only")
        return cls(
            settings=settings,
            db=db,
            keys=keys,
            tokens=TokenService(keys, settings.access_token_seconds),
            client_keys=ClientKeys(http, settings.jwks_allowed_hosts, settings.jwks_cache_seconds),
            patient_scopes=patient_scopes,
            oidc=OidcProvider(settings, http)
            if settings.oidc_metadata_url and settings.oidc_client_id
            else None,
        )


@dataclass(frozen=True)
class Endpoints:
    """The gateway's URLs, from the FHIR base (`https://gateway.example/fhir`)."""

    fhir_base: str

    @property
    def root(self) -> str:
        return self.fhir_base.removesuffix("/fhir")

    @property
    def issuer(self) -> str:
        return self.root + "/auth"

    @property
    def token(self) -> str:
        return self.root + "/auth/token"

    @property
    def authorize(self) -> str:
        return self.root + "/auth/authorize"

    @property
    def jwks(self) -> str:
        return self.root + "/auth/jwks"

    @property
    def introspect(self) -> str:
        return self.root + "/auth/introspect"

    @property
    def revoke(self) -> str:
        return self.root + "/auth/revoke"
