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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.chain import (
    ChainSigner,
    batch_message,
    canonical,
    checkpoint_message,
    column_values,
    record_hash,
    utcnow,
)
from rzcp.audit.events import AuditFacts, build_event, index_columns
from rzcp.audit.tables import GENESIS_HASH, audit_anchors, audit_checkpoints, audit_events
from rzcp.errors import ServiceUnavailable
from rzcp.settings import Settings
from rzcp.store.db import Database

log = logging.getLogger("rzcp.audit")

#: How often a batch is re-hashed after losing a race for the next seq before the writer gives up.
MAX_ATTEMPTS = 50
#: pg_advisory_xact_lock key of the writers that lost a race.
LOCK_KEY = 7513_0004


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
            async with self.db.write() as conn:
                await self._maybe_checkpoint(conn, head, force=True)
        except Exception as exc:  # the next batch tries again; the records themselves are safe
            log.warning("audit checkpoint at seq %d failed: %s", head[0], type(exc).__name__)

    async def _commit(self, batch: list[_Pending]) -> list[Receipt]:
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with self.db.write() as conn:
                    head = self._head
                    if head is None:
                        if attempt and not self.db.is_sqlite:
                            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                        head = await read_head(conn)
                    rows, new_head = self._chain(batch, head)
                    signature = self.signer.sign(batch_message(*new_head))
                    rows[-1].update(key_id=signature.key_id, signature=signature.value)
                    await conn.execute(insert(audit_events), rows)
                    await self._maybe_checkpoint(conn, new_head)
            except IntegrityError:
                self._head = None  # another process appended: read the head again
                continue
            self._head = new_head
            self.batches += 1
            self.records += len(rows)
            return [Receipt(r["seq"], r["hash"], r["event_id"]) for r in rows]
        raise _HeadMoved(f"the chain head kept moving ({MAX_ATTEMPTS} attempts)")

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

    async def _maybe_checkpoint(
        self, conn: AsyncConnection, head: tuple[int, str], *, force: bool = False
    ) -> None:
        last_seq, last_time = self._last_checkpoint
        now = time.monotonic()
        due = head[0] - last_seq >= self.checkpoint_records or now - last_time >= self.checkpoint_seconds
        if not (due or force):
            return
        signed_at = utcnow()
        signature = self.signer.sign(checkpoint_message(head[0], head[1], signed_at))
        await conn.execute(
            insert(audit_checkpoints).values(
                seq=head[0],
                hash=head[1],
                signed_at=signed_at,
                key_id=signature.key_id,
                signature=signature.value,
            )
        )
        self._last_checkpoint = (head[0], now)
        log.info(
            "audit checkpoint seq=%d hash=%s signed_at=%s key=%s signature=%s",
            head[0],
            head[1],
            signed_at.isoformat(timespec="microseconds"),
            signature.key_id,
            signature.value,
        )


async def read_head(conn: AsyncConnection) -> tuple[int, str]:
    """(seq, hash) of the chain's last record; after an archive of everything, its anchor; else genesis."""
    last = (
        await conn.execute(
            select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
        )
    ).first()
    if last is not None:
        return int(last.seq), last.hash
    anchor = (
        await conn.execute(
            select(audit_anchors.c.seq, audit_anchors.c.hash).order_by(audit_anchors.c.seq.desc()).limit(1)
        )
    ).first()
    if anchor is not None:
        return int(anchor.seq), anchor.hash
    return 0, GENESIS_HASH
