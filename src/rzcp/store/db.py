"""The one database handle per process, and the transactions that requests own.

SQLite is the embedded default: WAL mode so readers never wait for the writer, a busy timeout so two
processes writing at once queue instead of failing, and write transactions that start with
`BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails at once with "database is
locked" when another writer got in between, where an immediate one waits its turn. PostgreSQL needs no
such care: its row locks and compare-and-set updates do the same work.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Executable, Result, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

T = TypeVar("T")
log = logging.getLogger("rzcp.store")


class WriteLocked(Exception):
    """Another connection holds SQLite's write lock, and the caller chose not to wait for it."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 20) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        if self.is_sqlite:
            if ":memory:" in url or not make_url(url).database:  # `sqlite://` is in memory too
                raise ValueError("an in-memory SQLite database is not shared between connections: use a file")
            self.engine = _sqlite_engine(url, echo=echo, begin="BEGIN", pool_size=8)
            self._write_engine = _sqlite_engine(url, echo=echo, begin="BEGIN IMMEDIATE", pool_size=2)
            self._inline_engine = _sqlite_inline_engine(url, echo=echo)
            #: Inline read connections kept open between requests (see `query()`).
            self._inline_idle: list[Connection] = []
            self._sqlite_path = make_url(url).database or ""
            #: Raw connections of `sqlite_write()`, kept open between transactions.
            self._raw_idle: list[sqlite3.Connection] = []
            #: Transactions and rows committed on the loop since the last WAL checkpoint; the one running.
            self._loop_commits = self._loop_rows = 0
            self._wal_checkpoint: asyncio.Future[None] | None = None
        else:
            self.engine = create_async_engine(
                url, echo=echo, pool_size=10, max_overflow=10, hide_parameters=True
            )
            self._write_engine = self.engine
            self._query_engine = create_async_engine(
                url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
                hide_parameters=True,
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

    def sqlite_write(self, work: Callable[[sqlite3.Connection], T], *, wait: bool) -> T:
        """Run `work` in one `BEGIN IMMEDIATE` transaction on a raw sqlite3 connection: committed when it
        returns, rolled back when it raises. SQLite only.

        For writes small enough to run on the event loop (the audit writer's batches): without aiosqlite
        each statement costs no thread hop. With `wait=False` the busy timeout is 0, so a write lock held
        elsewhere (another process, or this one's aiosqlite writes) raises WriteLocked at once instead of
        blocking the loop; the caller then runs it again with `wait=True` in a thread
        (`asyncio.to_thread`), which waits up to the usual busy timeout. Both hold the same lock for the
        whole transaction, so what `work` reads cannot change before it commits.

        A commit on the loop never checkpoints the WAL (a checkpoint copies pages and syncs the files:
        milliseconds to tens of milliseconds, during which no request would move): every
        `WAL_CHECKPOINT_COMMITS` transactions or `WAL_CHECKPOINT_ROWS` rows written that way, a RESTART
        checkpoint runs in a thread instead (it waits for the write lock, so while it is pending the
        loop's writes go to their thread too, and afterwards the WAL starts again from its beginning; a
        passive one, racing the next commits, never let the WAL restart and it grew without bound).
        """
        conn = self._raw_take()
        keep = False
        try:
            for pragma in _IN_THREAD if wait else _ON_LOOP:
                conn.execute(pragma)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                keep = not conn.in_transaction
                if not wait and exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise WriteLocked from exc
                raise
            changes = conn.total_changes
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.rollback()
                keep = not conn.in_transaction
                raise
            keep = True
        finally:
            self._raw_give(conn, keep=keep)
        if not wait:
            self._loop_commits += 1
            self._loop_rows += conn.total_changes - changes
            self._maybe_checkpoint_wal()
        return result

    def _maybe_checkpoint_wal(self) -> None:
        due = self._loop_commits >= WAL_CHECKPOINT_COMMITS or self._loop_rows >= WAL_CHECKPOINT_ROWS
        if due and self._wal_checkpoint is None:
            self._loop_commits = self._loop_rows = 0
            self._wal_checkpoint = asyncio.get_running_loop().run_in_executor(None, self._checkpoint_wal)
            self._wal_checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_wal(self) -> None:
        conn = self._raw_take()
        try:
            for pragma in _IN_THREAD:
                conn.execute(pragma)
            conn.execute("PRAGMA wal_checkpoint(RESTART)")
        finally:
            self._raw_give(conn, keep=True)

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._wal_checkpoint = None
        if not future.cancelled() and future.exception() is not None:  # the next one tries again
            log.warning("WAL checkpoint failed: %s", type(future.exception()).__name__)

    def _raw_take(self) -> sqlite3.Connection:
        return self._raw_idle.pop() if self._raw_idle else self._raw_connect()

    def _raw_give(self, conn: sqlite3.Connection, *, keep: bool) -> None:
        if keep and len(self._raw_idle) < RAW_IDLE_MAX:
            self._raw_idle.append(conn)
        else:
            conn.close()

    def _raw_connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
        _sqlite_pragmas(conn, None)
        return conn

    async def dispose(self) -> None:
        if self.is_sqlite:
            if self._wal_checkpoint is not None:
                with suppress(Exception):
                    await self._wal_checkpoint
            while self._inline_idle:
                self._inline_idle.pop().close()
            while self._raw_idle:
                self._raw_idle.pop().close()
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
#: Raw write connections `Database.sqlite_write()` keeps (one on the loop, one in a thread at a time).
RAW_IDLE_MAX = 2
#: After how many transactions or rows committed on the loop `sqlite_write()` checkpoints the WAL (in a
#: thread): about SQLite's own default of every 1,000 pages written, for audit records of 4 kB and their
#: ten index entries (each transaction writes every page it changed again).
WAL_CHECKPOINT_COMMITS = 80
WAL_CHECKPOINT_ROWS = 400
#: On the loop: never wait for the lock, never checkpoint. In a thread: SQLite's usual behaviour.
_ON_LOOP = ("PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0")
_IN_THREAD = ("PRAGMA busy_timeout=30000", "PRAGMA wal_autocheckpoint=1000")


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
        hide_parameters=True,
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
        hide_parameters=True,
    )

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    # The driver's own transaction handling is switched off (_sqlite_pragmas); "begin" below emits BEGIN.
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    event.listen(engine.sync_engine, "begin", on_begin)
    return engine
