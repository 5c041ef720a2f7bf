"""The audit writer: group commit into one hash chain, shared by every process.

    writer = AuditWriter(db, signer)
    receipt = await writer.append(build_event(facts))     # returns once the record is committed

Each process has one writer. Callers hand it a record and await their batch's commit; one task per writer
takes whatever is waiting (up to `max_batch`) and appends it in one transaction:

1. the head of the chain is its last row. The writer keeps the head it last wrote and appends seq + 1, + 2 ...
   after it; the primary key on seq is the lock that goes through the database: when another process
   appended meanwhile, the insert of a taken seq fails (SQLite: inside `BEGIN IMMEDIATE`, which holds the
   database's write lock; PostgreSQL: the unique index makes the second inserter wait for the first and then
   fail), the transaction is rolled back, and the writer reads the head again (on PostgreSQL under an
   advisory transaction lock, so writers that lost a race queue instead of racing again) and re-hashes the
   batch. The chain can fork or gap in no interleaving; the common case costs no extra statement;
2. each record is hashed over the one before it; the batch's last record carries the gateway's Ed25519
   signature of its seq and hash, and every `checkpoint_seconds` / `checkpoint_records` a checkpoint row is
   appended too (and logged, so a copy lives outside the database), also when the writer falls idle and
   when it closes;
3. commit; then every caller of the batch gets its receipt, or, when anything failed, `AuditUnavailable`:
   no audit record, no response (fail closed).

Every request waits for its batch, so the write itself is on the request path, and it goes straight to the
driver (bench/README.md, "The store"):

- SQLite: the transaction runs inline on the event loop with the synchronous driver, as the request path's
  reads do (`Database.sqlite_write`): a batch of a few records takes less time on the loop than the thread
  hops of aiosqlite would. It never waits for the lock there: when another connection holds it (another
  process, or this one's own aiosqlite writes), the same transaction runs in a thread that waits its turn;
- PostgreSQL: one statement, on an autocommit connection, is the whole transaction: the batch's rows go in
  as one array per column (`INSERT ... SELECT FROM unnest(...)`), with the checkpoint row in the same
  statement when one is due. One round trip and one prepared statement, whatever the batch's size. Only
  when the head is unknown (at start, after a lost race) does it read it first, in a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.chain import (
    ChainSigner,
    batch_message,
    canonical,
    checkpoint_message,
    column_values,
    record_hash,
    stamp_text,
    utcnow,
)
from rzcp.audit.events import AuditFacts, build_event, index_columns
from rzcp.audit.tables import GENESIS_HASH, INDEX_COLUMNS
from rzcp.errors import ServiceUnavailable
from rzcp.settings import Settings
from rzcp.store.db import Database, WriteLocked

log = logging.getLogger("rzcp.audit")

#: How often a batch is re-hashed after losing a race for the next seq before the writer gives up.
MAX_ATTEMPTS = 50
#: pg_advisory_xact_lock key of the writers that lost a race.
LOCK_KEY = 7513_0004

#: The columns of audit_events in the order the statements below bind them.
COLUMNS = ("seq", *INDEX_COLUMNS, "key_id", "signature", "content", "prev_hash", "hash")
_CHECKPOINT_COLUMNS = "seq, hash, signed_at, key_id, signature"

#: The chain's head: its last record, or after an archive of everything the anchor (seq below any record).
HEAD_SQL = (
    "SELECT seq, hash FROM (SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1) AS last_record "
    "UNION ALL "
    "SELECT seq, hash FROM (SELECT seq, hash FROM audit_anchors ORDER BY seq DESC LIMIT 1) AS last_anchor "
    "ORDER BY seq DESC LIMIT 1"
)

# The statements are built from the constant column names above, never from input.
_SQLITE_INSERT = f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
_SQLITE_CHECKPOINT = f"INSERT INTO audit_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608

_PG_TYPES = {"seq": "bigint", "recorded": "timestamp", "emergency": "boolean"}
_CP = len(COLUMNS)  # the checkpoint's parameters follow the columns' arrays
_PG_APPEND = (
    f"WITH appended AS (INSERT INTO audit_events ({', '.join(COLUMNS)}) SELECT * FROM unnest("  # noqa: S608
    + ", ".join(f"${i}::{_PG_TYPES.get(name, 'text')}[]" for i, name in enumerate(COLUMNS, 1))
    + f")) INSERT INTO audit_checkpoints ({_CHECKPOINT_COLUMNS}) "
    f"SELECT ${_CP + 1}::bigint, ${_CP + 2}::text, ${_CP + 3}::timestamp, ${_CP + 4}::text, ${_CP + 5}::text "
    f"WHERE ${_CP + 1}::bigint IS NOT NULL"
)


class AuditUnavailable(ServiceUnavailable):
    """The audit record could not be written: the request must fail (503) and return no data."""


@dataclass(frozen=True)
class Receipt:
    seq: int
    hash: str
    event_id: str


@dataclass
class _Pending:
    row: dict[str, Any]
    content: bytes
    future: asyncio.Future[Receipt]


@dataclass(frozen=True)
class _Checkpoint:
    seq: int
    hash: str
    signed_at: datetime
    key_id: str
    signature: str
    at: float  # time.monotonic() when it was signed


@dataclass(frozen=True)
class _Written:
    """What one transaction appended: the chained rows, the new head, the checkpoint if one was due."""

    rows: list[dict[str, Any]]
    head: tuple[int, str]
    checkpoint: _Checkpoint | None


class _HeadMoved(Exception):
    pass


class AuditWriter:
    def __init__(
        self,
        db: Database,
        signer: ChainSigner,
        *,
        max_batch: int = 500,
        checkpoint_seconds: float = 10.0,
        checkpoint_records: int = 1000,
        timeout: float = 30.0,
    ) -> None:
        self.db = db
        self.signer = signer
        self.max_batch = max_batch
        self.checkpoint_seconds = checkpoint_seconds
        self.checkpoint_records = checkpoint_records
        self.timeout = timeout
        self._pending: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: (seq, hash) of the head as this process last saw it; None: read it under the lock.
        self._head: tuple[int, str] | None = None
        self._last_checkpoint: tuple[int, float] = (0, time.monotonic())
        #: Batches committed and records written, for metrics and the benchmark.
        self.batches = 0
        self.records = 0

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> AuditWriter:
        from rzcp.audit import signer_from_settings

        return cls(
            db,
            signer_from_settings(settings),
            max_batch=settings.audit_batch_max,
            checkpoint_seconds=settings.audit_checkpoint_seconds,
            checkpoint_records=settings.audit_checkpoint_records,
        )

    async def append(self, event: Mapping[str, Any]) -> Receipt:
        """Append one AuditEvent (a dict from `build_event`) and wait until it is committed.

        Raises AuditUnavailable when it could not be written; the caller must then fail the request."""
        if self._closing:
            raise AuditUnavailable("the audit trail is shutting down; the request was not carried out")
        try:
            content = canonical(event)
            row = index_columns(event)
        except Exception as exc:  # a malformed record is a bug: fail closed all the same
            raise AuditUnavailable(
                "the audit record could not be built; the request was not carried out"
            ) from exc
        loop = asyncio.get_running_loop()
        pending = _Pending(row, content, loop.create_future())
        self._pending.append(pending)
        self._ensure_task()
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), self.timeout)
        except TimeoutError:
            raise AuditUnavailable("the audit trail did not answer in time; the request failed") from None

    async def record(self, facts: AuditFacts) -> Receipt:
        """Build the AuditEvent for these facts and append it (see `append`)."""
        return await self.append(build_event(facts))

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rzcp-audit-writer")

    async def aclose(self) -> None:
        """Write what is waiting, then stop."""
        self._closing = True
        if self._task is not None and not self._task.done():
            assert self._wakeup is not None
            self._wakeup.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                if self._closing:
                    await self._checkpoint_head()
                    return
                self._wakeup.clear()
                try:  # idle: still sign a checkpoint of what was written, so the window stays short
                    await asyncio.wait_for(self._wakeup.wait(), self.checkpoint_seconds)
                except TimeoutError:
                    await self._checkpoint_head()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
            try:
                receipts = await self._commit(batch)
            except Exception as exc:
                self._head = None
                log.error("audit write failed for %d records: %s", len(batch), type(exc).__name__)
                for item in batch:
                    if not item.future.done():
                        error = AuditUnavailable("the audit trail could not be written; the request failed")
                        error.__cause__ = exc
                        item.future.set_exception(error)
                continue
            for item, receipt in zip(batch, receipts, strict=True):
                if not item.future.done():
                    item.future.set_result(receipt)

    async def _checkpoint_head(self) -> None:
        """A checkpoint of the last record this writer wrote, when no checkpoint covers it yet."""
        head = self._head
        if head is None or head[0] <= self._last_checkpoint[0]:
            return
        try:
            await self._write([], force_checkpoint=True)
        except Exception as exc:  # the next batch tries again; the records themselves are safe
            log.warning("audit checkpoint at seq %d failed: %s", head[0], type(exc).__name__)

    async def _commit(self, batch: list[_Pending]) -> list[Receipt]:
        for attempt in range(MAX_ATTEMPTS):
            try:
                written = await self._write(batch, lock=attempt > 0)
            except Exception as exc:
                if not _seq_taken(exc):
                    raise
                self._head = None  # another process appended: read the head again
                continue
            self.batches += 1
            self.records += len(written.rows)
            return [Receipt(r["seq"], r["hash"], r["event_id"]) for r in written.rows]
        raise _HeadMoved(f"the chain head kept moving ({MAX_ATTEMPTS} attempts)")

    async def _write(
        self, batch: list[_Pending], *, force_checkpoint: bool = False, lock: bool = False
    ) -> _Written:
        """Append the batch after the head in one transaction (see the module's docstring for how)."""
        if self.db.is_sqlite:
            work = functools.partial(self._sqlite_append, batch, force_checkpoint)
            try:
                written = self.db.sqlite_write(work, wait=False)
            except WriteLocked:
                written = await asyncio.to_thread(self.db.sqlite_write, work, wait=True)
        else:
            written = await self._pg_append(batch, force_checkpoint, lock)
        self._head = written.head
        if written.checkpoint is not None:
            self._checkpointed(written.checkpoint)
        return written

    def _sqlite_append(
        self, batch: list[_Pending], force_checkpoint: bool, conn: sqlite3.Connection
    ) -> _Written:
        head = self._head
        if head is None:
            found = conn.execute(HEAD_SQL).fetchone()
            head = (int(found[0]), found[1]) if found else (0, GENESIS_HASH)
        written = self._prepare(batch, head, force_checkpoint)
        conn.executemany(_SQLITE_INSERT, [_sqlite_values(row) for row in written.rows])
        if (cp := written.checkpoint) is not None:
            conn.execute(
                _SQLITE_CHECKPOINT, (cp.seq, cp.hash, stamp_text(cp.signed_at), cp.key_id, cp.signature)
            )
        return written

    async def _pg_append(self, batch: list[_Pending], force_checkpoint: bool, lock: bool) -> _Written:
        async with self.db.query() as conn:
            raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
            try:
                if self._head is not None:  # autocommit: the statement is the transaction
                    written = self._prepare(batch, self._head, force_checkpoint)
                    await raw.execute(_PG_APPEND, *_pg_arguments(written))
                    return written
                async with raw.transaction():
                    if lock:
                        await raw.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                    found = await raw.fetchrow(HEAD_SQL)
                    head = (int(found[0]), found[1]) if found else (0, GENESIS_HASH)
                    written = self._prepare(batch, head, force_checkpoint)
                    await raw.execute(_PG_APPEND, *_pg_arguments(written))
                return written
            except BaseException as exc:  # a statement that failed leaves the connection usable
                if not isinstance(exc, asyncpg.PostgresError) or raw.is_closed():
                    await conn.invalidate()
                raise

    def _prepare(self, batch: list[_Pending], head: tuple[int, str], force_checkpoint: bool) -> _Written:
        """The batch chained after `head`, its last record signed, and the checkpoint if one is due."""
        rows, new_head = self._chain(batch, head)
        if rows:
            signature = self.signer.sign(batch_message(*new_head))
            rows[-1].update(key_id=signature.key_id, signature=signature.value)
        return _Written(rows, new_head, self._checkpoint_due(new_head, force=force_checkpoint))

    @staticmethod
    def _chain(batch: list[_Pending], head: tuple[int, str]) -> tuple[list[dict[str, Any]], tuple[int, str]]:
        seq, prev = head
        rows = []
        for item in batch:
            seq += 1
            row = dict(item.row)
            digest = record_hash(seq, prev, column_values(row), item.content)
            row.update(
                seq=seq,
                prev_hash=prev,
                hash=digest,
                content=item.content.decode(),
                key_id=None,
                signature=None,
            )
            rows.append(row)
            prev = digest
        return rows, (seq, prev)

    def _checkpoint_due(self, head: tuple[int, str], *, force: bool) -> _Checkpoint | None:
        last_seq, last_time = self._last_checkpoint
        now = time.monotonic()
        due = head[0] - last_seq >= self.checkpoint_records or now - last_time >= self.checkpoint_seconds
        if not (due or force):
            return None
        signed_at = utcnow()
        signature = self.signer.sign(checkpoint_message(head[0], head[1], signed_at))
        return _Checkpoint(head[0], head[1], signed_at, signature.key_id, signature.value, now)

    def _checkpointed(self, checkpoint: _Checkpoint) -> None:
        """Once committed: the next checkpoint counts from here, and a copy goes to the log."""
        self._last_checkpoint = (checkpoint.seq, checkpoint.at)
        log.info(
            "audit checkpoint seq=%d hash=%s signed_at=%s key=%s signature=%s",
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.signed_at.isoformat(timespec="microseconds"),
            checkpoint.key_id,
            checkpoint.signature,
        )


def _sqlite_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row in COLUMNS order, in SQLite's storage form (the hashed form: see rzcp.audit.chain)."""
    return (
        row["seq"],
        *column_values(row),
        row["key_id"],
        row["signature"],
        row["content"],
        row["prev_hash"],
        row["hash"],
    )


def _pg_arguments(written: _Written) -> list[Any]:
    """One array per column, then the checkpoint's values (all None: no checkpoint)."""
    arrays: list[Any] = [[row[name] for row in written.rows] for name in COLUMNS]
    cp = written.checkpoint
    if cp is None:
        return [*arrays, None, None, None, None, None]
    return [*arrays, cp.seq, cp.hash, cp.signed_at, cp.key_id, cp.signature]


def _seq_taken(exc: BaseException) -> bool:
    """Did the insert fail because another writer took the seq first (the chain's head moved)?"""
    if isinstance(exc, sqlite3.IntegrityError):
        return exc.sqlite_errorname in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")
    return isinstance(exc, asyncpg.UniqueViolationError)


async def read_head(conn: AsyncConnection) -> tuple[int, str]:
    """(seq, hash) of the chain's last record; after an archive of everything, its anchor; else genesis."""
    found = (await conn.execute(text(HEAD_SQL))).first()
    return (int(found[0]), found[1]) if found else (0, GENESIS_HASH)
