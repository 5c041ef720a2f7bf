"""RZCP_DATABASE_URL in the forms operators copy from elsewhere."""

from __future__ import annotations

import pydantic
import pytest

from rzcp.settings import Settings
from rzcp.store.db import Database
from rzcp.store.urls import for_drivers


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://rzcp@db.example/rzcp", "postgresql+asyncpg://rzcp@db.example/rzcp"),
        (
            "postgres://rzcp:s%40cret@db.example:6432/rzcp",
            "postgresql+asyncpg://rzcp:s%40cret@db.example:6432/rzcp",
        ),
        ("postgresql+psycopg://rzcp@db.example/rzcp", "postgresql+asyncpg://rzcp@db.example/rzcp"),
        (
            "postgresql://rzcp@db.example/rzcp?sslmode=verify-full",
            "postgresql+asyncpg://rzcp@db.example/rzcp?ssl=verify-full",
        ),
        ("sqlite:///./rzcp.db", "sqlite+aiosqlite:///./rzcp.db"),
        ("sqlite:///C:%5Crzcp%5Crzcp.db", "sqlite+aiosqlite:///C:%5Crzcp%5Crzcp.db"),
    ],
)
def test_the_gateways_drivers_are_used_for_the_same_database(given: str, used: str) -> None:
    assert for_drivers(given) == used
    assert Settings(database_url=given).database_url == used


@pytest.mark.parametrize(
    "given",
    [
        "postgresql+asyncpg://rzcp@db.example/rzcp?ssl=require",
        "postgresql+asyncpg://rzcp@h1:5432,h2:5433/rzcp",  # several hosts: not for us to parse
        "sqlite+aiosqlite:////var/lib/rzcp/rzcp.db",
        "mysql://rzcp@db.example/rzcp",  # the start-up check refuses it, naming what it takes
        "not a url",
    ],
)
def test_a_url_for_the_gateways_drivers_or_another_database_stays_as_given(given: str) -> None:
    assert for_drivers(given) == given


def test_libpq_settings_asyncpg_does_not_take_are_refused_at_once_without_the_password() -> None:
    """They would fail only at the first connection, after the gateway had started."""
    url = "postgresql://rzcp:s3cret@db.example/rzcp?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(database_url=url)
    assert "sslrootcert" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="not both"):
        for_drivers("postgresql://rzcp@db.example/rzcp?sslmode=require&ssl=require")


@pytest.mark.parametrize("given", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_sqlite_url_is_refused_with_the_reason(given: str) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Database(Settings(database_url=given).database_url)
