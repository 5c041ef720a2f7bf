"""RZCP_DATABASE_URL in the forms operators copy from elsewhere."""

from __future__ import annotations

import pytest

from rzcp.settings import Settings
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
        (
            "postgresql+asyncpg://rzcp@db.example/rzcp?ssl=require",
            "postgresql+asyncpg://rzcp@db.example/rzcp?ssl=require",
        ),
        ("sqlite:///./rzcp.db", "sqlite+aiosqlite:///./rzcp.db"),
        ("sqlite+aiosqlite:////var/lib/rzcp/rzcp.db", "sqlite+aiosqlite:////var/lib/rzcp/rzcp.db"),
    ],
)
def test_the_gateways_drivers_are_used_for_the_same_database(given: str, used: str) -> None:
    assert for_drivers(given) == used
    assert Settings(database_url=given).database_url == used


@pytest.mark.parametrize("given", ["mysql://rzcp@db.example/rzcp", "not a url"])
def test_another_database_is_left_for_the_start_up_check_to_refuse(given: str) -> None:
    assert for_drivers(given) == given
