"""The database URL as the gateway's drivers take it, from the forms operators write.

The gateway talks to PostgreSQL through asyncpg and to SQLite through aiosqlite (rzcp.store.db), but a
URL copied from a hosting panel or another tool says `postgres://`, `postgresql://` or
`postgresql+psycopg://` (../shared/contract.md names psycopg too), and `sslmode=` where asyncpg's keyword
is `ssl=`. Those name the same server; refusing them would only send the operator to rewrite a URL.

Only the scheme is replaced, as text: the rest (a password's escapes, a SQLite path, `:memory:`) stays
byte for byte what was given. A URL already naming the gateway's drivers is returned unchanged.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

ASYNC_POSTGRES = "postgresql+asyncpg"
ASYNC_SQLITE = "sqlite+aiosqlite"
_POSTGRES_FORMS = frozenset({"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"})
_SQLITE_FORMS = frozenset({"sqlite", "sqlite+pysqlite"})
#: libpq's connection parameters that asyncpg, given them as keywords, does not take.
_LIBPQ_ONLY = frozenset(
    {
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslpassword",
        "connect_timeout",
        "application_name",
        "options",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "gssencmode",
        "channel_binding",
        "passfile",
        "service",
        "client_encoding",
    }
)


def for_drivers(url: str) -> str:
    """`url` with the driver the gateway uses; a URL of another database, or none at all, unchanged (the
    start-up check names what it takes). Raises ValueError for a libpq setting asyncpg cannot take, which
    would otherwise fail only at the first connection."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme in _SQLITE_FORMS:
        return f"{ASYNC_SQLITE}://{rest}"
    if scheme not in _POSTGRES_FORMS:
        return url
    location, mark, query = rest.partition("?")
    if not mark:
        return f"{ASYNC_POSTGRES}://{rest}"
    pairs = parse_qsl(query, keep_blank_values=True)
    names = {name for name, _ in pairs}
    refused = sorted(names & _LIBPQ_ONLY)
    if refused:
        raise ValueError(
            f"RZCP_DATABASE_URL: {', '.join(refused)} is a libpq setting the gateway's driver (asyncpg) "
            "does not take; ssl= takes disable, prefer, require, verify-ca or verify-full"
        )
    if "sslmode" in names:
        if "ssl" in names:
            raise ValueError("RZCP_DATABASE_URL: give sslmode= or ssl=, not both")
        pairs = [("ssl" if name == "sslmode" else name, value) for name, value in pairs]
        query = urlencode(pairs)
    return f"{ASYNC_POSTGRES}://{location}?{query}"
