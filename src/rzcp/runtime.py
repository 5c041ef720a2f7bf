"""What one gateway process holds while it runs: its settings, the database, the search definitions and
the paging seal. Built once in the app's lifespan; nothing in it decides alone what another process would
decide differently (all shared state lives in the database)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    served_types: frozenset[str] = field(default_factory=frozenset)

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
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            registry=registry,
            sealer=PageSealer(settings.secret_key),
            served_types=served,
        )

    @property
    def auto_migrate(self) -> bool:
        """Upgrade the schema at start-up: always for the embedded SQLite, on request for PostgreSQL."""
        configured = self.settings.auto_migrate
        return self.db.is_sqlite if configured is None else configured

    def serves(self, res_type: str) -> bool:
        return res_type in self.served_types
