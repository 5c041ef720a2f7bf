"""The database URL as the gateway's drivers take it, from the forms operators write.

The gateway talks to PostgreSQL through asyncpg and to SQLite through aiosqlite (rzcp.store.db), but a
URL copied from a hosting panel or another tool says `postgres://`, `postgresql://` or
`postgresql+psycopg://` (../shared/contract.md names psycopg too), and `sslmode=` where asyncpg's keyword
is `ssl=`. Those name the same server; refusing them would only send the operator to rewrite a URL.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ASYNC_POSTGRES = "postgresql+asyncpg"
ASYNC_SQLITE = "sqlite+aiosqlite"
_POSTGRES_FORMS = frozenset({"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"})


def for_drivers(url: str) -> str:
    """`url` with the driver the gateway uses; a URL of another database, or none at all, unchanged (the
    start-up check names what it takes)."""
    try:
        parsed: URL = make_url(url)
    except ArgumentError:
        return url
    if parsed.drivername in _POSTGRES_FORMS:
        query = dict(parsed.query)
        if "sslmode" in query and "ssl" not in query:
            query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(drivername=ASYNC_POSTGRES, query=query)
    elif parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername=ASYNC_SQLITE)
    else:
        return url
    return parsed.render_as_string(hide_password=False)
