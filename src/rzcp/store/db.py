"""The one database handle per process, and the transactions that requests own.

SQLite is the embedded default: WAL mode so readers never wait for the writer, a busy timeout so two
processes writing at once queue instead of failing, and write transactions that start with
`BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails at once with "database is
locked" when another writer got in between, where an immediate one waits its turn. PostgreSQL needs no
such care: its row locks and compare-and-set updates do the same work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        if self.is_sqlite:
            if ":memory:" in url:
                raise ValueError("an in-memory SQLite database is not shared between connections: use a file")
            self.engine = _sqlite_engine(url, echo=echo, immediate=False, pool_size=8)
            self._write_engine = _sqlite_engine(url, echo=echo, immediate=True, pool_size=2)
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10)
            self._write_engine = self.engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for reading: committed at the end (a no-op), rolled back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write: committed when the block ends normally, else rolled back."""
        async with self._write_engine.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._write_engine is not self.engine:
            await self._write_engine.dispose()


def _sqlite_engine(url: str, *, echo: bool, immediate: bool, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=4, connect_args={"timeout": 30}
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, instead of the driver's own guesswork.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
    return engine
