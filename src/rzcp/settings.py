"""The gateway's configuration: one class, read from `RZCP_*` variables or a file given with --config.

Tests and the demo build a `Settings` object directly instead of patching the environment, so two gateways
with different settings can run in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The registry resources the gateway keeps for itself (later issues add their behaviour).
REGISTRY_TYPES = ("Organization", "Endpoint", "Patient", "Consent", "AuditEvent")

#: Known only to development; a production start-up with it is refused.
DEV_SECRET = "rzcp-development-secret-do-not-use-in-production"  # noqa: S105 - refused in production


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RZCP_", extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./rzcp.db"
    #: Public base of the FHIR API (`https://gateway.example/fhir`); derived from each request when unset.
    public_base_url: str | None = None
    #: Resource types served at /fhir; "*" serves every R4 type (the simulated members use that).
    fhir_resource_types: list[str] = Field(default_factory=lambda: list(REGISTRY_TYPES))
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    default_page_size: int = Field(default=20, ge=1, le=1000)
    max_page_size: int = Field(default=500, ge=1, le=5000)
    #: Secret that seals paging links and (later) other server-side tokens; must be set in production.
    secret_key: str = DEV_SECRET
    log_level: str = "INFO"
    #: Apply migrations at start-up; unset means yes on SQLite, no on PostgreSQL (run `rzcp db upgrade`).
    auto_migrate: bool | None = None

    @field_validator("fhir_resource_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEV_SECRET or len(self.secret_key) < 32:
                raise ValueError(
                    "RZCP_SECRET_KEY must be set to a random value of 32+ characters in production"
                )
            if self.database_url.startswith("sqlite"):
                raise ValueError(
                    "production needs PostgreSQL: set RZCP_DATABASE_URL=postgresql+asyncpg://..."
                )
        if self.default_page_size > self.max_page_size:
            raise ValueError("RZCP_DEFAULT_PAGE_SIZE may not exceed RZCP_MAX_PAGE_SIZE")
        return self

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
