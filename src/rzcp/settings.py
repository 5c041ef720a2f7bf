"""The gateway's configuration: one class, read from `RZCP_*` variables or a file given with --config.

Tests and the demo build a `Settings` object directly instead of patching the environment, so two gateways
with different settings can run in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rzcp.store.urls import for_drivers

#: A list given in the environment as `a,b,c` (or as JSON).
CommaList = Annotated[list[str], NoDecode]

Role = Literal["member", "auditor", "admin"]


def _roles(value: object) -> object:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


#: One person's roles, given as `admin,auditor` (or a JSON list); never empty.
PersonRoles = Annotated[list[Role], BeforeValidator(_roles), Field(min_length=1)]

#: The registry resources the gateway keeps for itself (later issues add their behaviour).
REGISTRY_TYPES = ("Organization", "Endpoint", "Patient", "Consent", "AuditEvent")


def _random_enough(secret: str) -> bool:
    """32 characters or more, and not a few repeated: `aaaa...` passed the length check (an operator's
    trial). A `secrets.token_urlsafe(48)` has 64 characters, some 40 of them different."""
    return len(secret) >= 32 and len(set(secret)) >= 16


#: Known only to development; a production start-up with it is refused.
DEV_SECRET = "rzcp-development-secret-do-not-use-in-production"  # noqa: S105 - refused in production
DEV_BSN_SECRET = "rzcp-development-bsn-secret-do-not-use-in-production"  # noqa: S105 - refused too


class Settings(BaseSettings):
    #: A refused setting's message never repeats the values given (a database URL's password, a secret).
    model_config = SettingsConfigDict(
        env_prefix="RZCP_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./rzcp.db"
    #: Public base of the FHIR API (`https://gateway.example/fhir`); derived from each request when unset
    #: (development only: production requires it, or issuer and audience would follow the Host header).
    public_base_url: str | None = None
    #: Resource types served at /fhir; "*" serves every R4 type (the simulated members use that).
    fhir_resource_types: CommaList = Field(default_factory=lambda: list(REGISTRY_TYPES))
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    default_page_size: int = Field(default=20, ge=1, le=1000)
    max_page_size: int = Field(default=500, ge=1, le=5000)
    #: Secret that seals paging links and (later) other server-side tokens; must be set in production.
    secret_key: str = DEV_SECRET
    log_level: str = "INFO"
    #: When set, `/metrics` answers only a scraper sending `Authorization: Bearer <this>` (its counts per
    #: route say how the region is used); required in production, open in development.
    metrics_token: str | None = None
    #: Apply migrations at start-up; unset means yes on SQLite, no on PostgreSQL (run `rzcp db upgrade`).
    auto_migrate: bool | None = None

    # --- who may call (rzcp.auth) -------------------------------------------------------------------------
    #: False switches authentication off, for benchmarks only (with token vs without); never in production.
    auth_enabled: bool = True
    #: Lifetime of the access tokens the gateway issues, in seconds.
    access_token_seconds: int = Field(default=300, ge=30, le=3600)
    #: Hosts a client's registered jwks_uri may point at; any other is never fetched.
    jwks_allowed_hosts: CommaList = Field(default_factory=list)
    #: How long a fetched JWKS is used before it is fetched again (an unknown kid refetches sooner).
    jwks_cache_seconds: int = Field(default=300, ge=0)
    #: The patient app's OAuth client (public, PKCE) and the redirect URIs registered for it, beside the
    #: gateway's own `/app/` (always registered: the patient app this gateway serves).
    patient_app_client_id: str = "rzcp-patient-app"
    patient_app_redirect_uris: CommaList = Field(default_factory=list)
    #: The administrators' console's OAuth client (public, PKCE); its one redirect URI is `/admin/`.
    admin_console_client_id: str = "rzcp-admin-console"
    #: The most a patient token may carry.
    patient_scopes: str = (
        "patient/Patient.rs patient/Consent.cruds patient/AuditEvent.rs patient/Organization.rs"
    )
    #: People (the identity provider's subject) who log in to the administrators' console, and their roles:
    #: `{"dev:alice": "auditor", "dev:carol": "admin,auditor"}`; an admin reads the trail only as an auditor.
    person_roles: dict[str, PersonRoles] = Field(default_factory=dict)
    #: The production identity provider (OpenID Connect discovery URL and this gateway's client there).
    oidc_metadata_url: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    #: The ID-token claim that carries the BSN.
    oidc_bsn_claim: str = "bsn"
    #: The development identity provider (a BSN form); RZCP_DEV_IDP=1, never in production.
    dev_idp: bool = False

    # --- the consent registry (rzcp.consent) -------------------------------------------------------------
    #: The region's consent policy (YAML, validated at start-up); unset: the repository's consent/policy.yaml.
    consent_policy_path: Path | None = None
    #: Patients whose compiled consents one process keeps in memory (least recently used go first).
    consent_cache_patients: int = Field(default=100_000, ge=100)

    # --- the audit trail (rzcp.audit) ---------------------------------------------------------------------
    #: Ed25519 key that signs the chain's checkpoints: base64url of the 32-byte seed (`rzcp audit keygen`).
    #: Unset in development: derived from RZCP_SECRET_KEY. Required in production.
    audit_signing_key: str | None = None
    #: Earlier public keys (base64url), still accepted when verifying checkpoints signed before a rotation.
    audit_verify_keys: CommaList = Field(default_factory=list)
    #: A signed checkpoint row at least this often (seconds) and every this many records.
    audit_checkpoint_seconds: float = Field(default=10.0, gt=0)
    audit_checkpoint_records: int = Field(default=1000, ge=1)
    #: The most records one group commit writes.
    audit_batch_max: int = Field(default=500, ge=1, le=10_000)
    #: Records younger than this are never removed (NEN 7513: at least five years).
    audit_retention_days: int = Field(default=1827, ge=1)

    # --- the exchange (rzcp.exchange) ---------------------------------------------------------------------
    #: The locator's secret: keys the BSN look-up hash (HMAC-SHA256) and the BSN's encryption (AES-GCM),
    #: each through its own derived key. Refused at its default in production; changing it orphans the index.
    bsn_secret: str = DEV_BSN_SECRET
    #: A member's call deadline (seconds) when its endpoint row names none.
    member_timeout: float = Field(default=5.0, gt=0, le=120)
    #: Pulls one process has under way at one member at a time; the rest wait their turn, up to the
    #: member's timeout (rzcp.exchange.gates).
    member_max_pulls: int = Field(default=8, ge=1, le=1000)
    #: Run the outbox's delivery worker in this process.
    outbox_worker: bool = True
    #: Seconds a worker holds a claimed message; past it another process may deliver it again.
    outbox_lease_seconds: float = Field(default=30.0, ge=1)
    #: How often an idle worker looks for due messages.
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    #: The first retry's pause (doubled each attempt, with jitter, up to outbox_retry_max_seconds).
    outbox_retry_seconds: float = Field(default=2.0, gt=0)
    outbox_retry_max_seconds: float = Field(default=600.0, gt=0)
    #: Attempts before a message is marked failed for good.
    outbox_max_attempts: int = Field(default=30, ge=1)

    @field_validator("database_url")
    @classmethod
    def _driver_url(cls, value: str) -> str:
        return for_drivers(value)

    @field_validator("audit_verify_keys", mode="before")
    @classmethod
    def _split_audit_keys(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _audit_key_in_production(self) -> Settings:
        # after the general production checks (the secret key, PostgreSQL), which say more when they fail
        basics_ok = self.secret_key != DEV_SECRET and not self.database_url.startswith("sqlite")
        if self.environment == "production" and basics_ok and not self.audit_signing_key:
            raise ValueError("RZCP_AUDIT_SIGNING_KEY must be set in production (see `rzcp audit keygen`)")
        return self

    @field_validator(
        "fhir_resource_types",
        "jwks_allowed_hosts",
        "patient_app_redirect_uris",
        mode="before",
    )
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEV_SECRET or not _random_enough(self.secret_key):
                raise ValueError(
                    "RZCP_SECRET_KEY must be set to a random value of 32+ characters in production"
                )
            if not self.auth_enabled:
                raise ValueError("RZCP_AUTH_ENABLED=false is for benchmarks only, never in production")
            if self.bsn_secret == DEV_BSN_SECRET or not _random_enough(self.bsn_secret):
                raise ValueError(
                    "RZCP_BSN_SECRET must be set to a random value of 32+ characters in production"
                )
            if len({self.secret_key, self.bsn_secret, self.metrics_token}) < 3:
                raise ValueError(
                    "RZCP_SECRET_KEY, RZCP_BSN_SECRET and RZCP_METRICS_TOKEN must be three different values"
                )
            if self.dev_idp:
                raise ValueError("RZCP_DEV_IDP (the development identity provider) is refused in production")
            if self.database_url.startswith("sqlite"):
                raise ValueError(
                    "production needs PostgreSQL: set RZCP_DATABASE_URL=postgresql+asyncpg://..."
                )
            if not self.metrics_token or not _random_enough(self.metrics_token):
                raise ValueError(
                    "production needs RZCP_METRICS_TOKEN, a random value of 32+ characters that the "
                    "metrics scraper sends as a bearer token"
                )
            if not (self.public_base_url or "").startswith("https://"):
                # else the token issuer, audience and discovery follow each request's Host header
                raise ValueError(
                    "production needs RZCP_PUBLIC_BASE_URL, the https:// address clients reach /fhir at"
                )
        if self.default_page_size > self.max_page_size:
            raise ValueError("RZCP_DEFAULT_PAGE_SIZE may not exceed RZCP_MAX_PAGE_SIZE")
        return self

    @property
    def https_only(self) -> bool:
        """Production registers members' endpoints and clients' jwks URLs over https only (loopback
        excepted): patient data and the keys that admit a system never cross a network in the clear."""
        return self.environment == "production"

    @property
    def serves_all_types(self) -> bool:
        return "*" in self.fhir_resource_types


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from the environment, overlaid by a `KEY=value` file (RZCP_ prefix optional) when given."""
    if config_file is None:
        return Settings()
    values: dict[str, str] = {}
    for raw in config_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lower().removeprefix("rzcp_")
        values[key] = value.strip().strip('"').strip("'")
    return Settings(**values)
