"""What one gateway process holds while it runs: its settings, the database, the search definitions and
the paging seal. Built once in the app's lifespan; nothing in it decides alone what another process would
decide differently (all shared state lives in the database)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from rzcp.audit.writer import AuditWriter
from rzcp.auth.service import AuthRuntime
from rzcp.consent.cache import ConsentCache
from rzcp.consent.hooks import ConsentHook
from rzcp.consent.policy import Policy, load_policy
from rzcp.exchange.http import build_http_client
from rzcp.fhir.paging import PageSealer
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.settings import Settings
from rzcp.store.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    registry: SearchRegistry
    sealer: PageSealer
    #: The process's one outgoing HTTP client: JWKS fetches and the member adapters.
    http: httpx.AsyncClient
    auth: AuthRuntime
    #: The region's consent policy (consent/policy.yaml), validated at start-up.
    policy: Policy
    #: This process's compiled consents, invalidated through the database's change counter.
    consents: ConsentCache
    #: The audit trail's writer: one per process, group-committing every request's AuditEvent.
    audit: AuditWriter
    served_types: frozenset[str] = field(default_factory=frozenset)
    #: Per resource type, what a write must pass and note besides the store (Consent: the policy check
    #: and the change counter).
    write_hooks: dict[str, ConsentHook] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        registry = SearchRegistry.default()
        known = frozenset(registry.resource_types())
        if settings.serves_all_types:
            served = known
        else:
            unknown = sorted(set(settings.fhir_resource_types) - known)
            if unknown:
                raise ValueError(
                    f"RZCP_FHIR_RESOURCE_TYPES names unknown R4 resource types: {', '.join(unknown)}"
                )
            served = frozenset(settings.fhir_resource_types)
        db = Database(settings.database_url)
        policy = load_policy(settings.consent_policy_path)
        http = build_http_client()
        return cls(
            settings=settings,
            db=db,
            http=http,
            auth=AuthRuntime.build(settings, db, http),
            registry=registry,
            sealer=PageSealer(settings.secret_key),
            policy=policy,
            consents=ConsentCache(max_patients=settings.consent_cache_patients),
            audit=AuditWriter.from_settings(settings, db),
            served_types=served,
            write_hooks={"Consent": ConsentHook(policy)},
        )

    @property
    def auto_migrate(self) -> bool:
        """Upgrade the schema at start-up: always for the embedded SQLite, on request for PostgreSQL."""
        configured = self.settings.auto_migrate
        return self.db.is_sqlite if configured is None else configured

    async def aclose(self) -> None:
        await self.audit.aclose()
        await self.http.aclose()
        await self.db.dispose()

    def fhir_base(self, request_base: str) -> str:
        """The FHIR base that links and full URLs name: the configured public one, or else the request's
        own (a development set-up). Never the request's when one is configured: its Host header is the
        caller's to choose, and behind a proxy it is the internal address."""
        configured = self.settings.public_base_url
        return configured.rstrip("/") if configured else request_base.rstrip("/") + "/fhir"

    def serves(self, res_type: str) -> bool:
        return res_type in self.served_types
