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
from typing import Any, cast

from sqlalchemy import Connection, Engine, Executable, Result, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 20) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        if self.is_sqlite:
            if ":memory:" in url:
                raise ValueError("an in-memory SQLite database is not shared between connections: use a file")
            self.engine = _sqlite_engine(url, echo=echo, begin="BEGIN", pool_size=8)
            self._write_engine = _sqlite_engine(url, echo=echo, begin="BEGIN IMMEDIATE", pool_size=2)
            self._inline_engine = _sqlite_inline_engine(url, echo=echo)
            #: Inline read connections kept open between requests (see `query()`).
            self._inline_idle: list[Connection] = []
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10)
            self._write_engine = self.engine
            self._query_engine = create_async_engine(
                url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
            )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for reading: committed at the end (a no-op), rolled back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def query(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit mode, for the request path's reads: no BEGIN/COMMIT round trips.

        Each statement sees the data committed when it starts (on PostgreSQL that is what READ COMMITTED
        gives inside a transaction too). Use `read()` where several statements need one snapshot, and
        for server-side cursors.

        On SQLite the connection is taken from (and given back to) a list of idle ones this process
        keeps open: a pool checkout and check-in cost more than the read itself. A connection that saw an
        database error is closed instead.
        """
        if self.is_sqlite:
            idle = self._inline_idle
            sync_conn = idle.pop() if idle else self._inline_engine.connect()
            keep = False
            try:
                yield cast(AsyncConnection, InlineConnection(sync_conn))
                keep = True
            except Exception as exc:  # a 404 keeps its connection; a database error does not
                keep = not isinstance(exc, DBAPIError)
                raise
            finally:
                if keep and len(idle) < INLINE_IDLE_MAX and not sync_conn.invalidated:
                    idle.append(sync_conn)
                else:
                    sync_conn.close()
            return
        async with self._query_engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write: committed when the block ends normally, else rolled back."""
        async with self._write_engine.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        if self.is_sqlite:
            while self._inline_idle:
                self._inline_idle.pop().close()
            self._inline_engine.dispose()
            engines = {self.engine, self._write_engine}
        else:
            engines = {self.engine, self._query_engine}
        for engine in engines:
            await engine.dispose()


class InlineConnection:
    """The read side of an AsyncConnection, run inline on the event loop with the synchronous driver.

    On SQLite a request-path read (a primary-key lookup, an indexed search) takes tens of microseconds in
    WAL mode, where each aiosqlite call is a thread hop of 100 µs or more, four per statement. Readers
    never wait for the writer in WAL mode, so running them inline blocks the loop for less time than the
    hops would. Writes keep going through aiosqlite (`Database.write()`).
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        return self._conn.execute(statement, parameters)

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return self._conn.scalar(statement, parameters)


#: Inline read connections `Database.query()` keeps for the next request; more are opened when needed.
INLINE_IDLE_MAX = 8


def _sqlite_inline_engine(url: str, *, echo: bool) -> Engine:
    """The synchronous engine of the inline reads. Its pool never makes a checkout wait: a wait would
    block the event loop, and with it the requests that would give a connection back (`query()` keeps
    its own idle connections, so a checkout from this pool is rare)."""
    engine = create_engine(
        url.replace("sqlite+aiosqlite", "sqlite+pysqlite"),
        echo=echo,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": 30, "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_engine(url: str, *, echo: bool, begin: str, pool_size: int) -> AsyncEngine:
    """`begin` is the statement that opens each transaction."""
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=4,
        connect_args={"timeout": 30},
    )

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    # The driver's own transaction handling is switched off (_sqlite_pragmas); "begin" below emits BEGIN.
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    event.listen(engine.sync_engine, "begin", on_begin)
    return engine
