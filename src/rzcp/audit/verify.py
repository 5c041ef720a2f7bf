"""Verification of the audit trail: the hash chain, its signed checkpoints and head, and its archive anchor.

`verify_chain` reads the whole trail in one read-only snapshot (REPEATABLE READ on PostgreSQL; one SQLite
read transaction), in chunks by seq, and stops at the first bad record:

- a record whose seq is not the one expected                 -> the missing seq (a deleted row)
- a record whose prev_hash is not the hash before it          -> that record (swapped or inserted rows)
- a record whose hash does not match its columns and content  -> that record (a changed field)
- a checkpoint whose signature is not valid                   -> the seq it names
- a checkpoint whose hash differs from the record at its seq   -> that record (a rewritten stretch ends here)
- a chain that ends before the newest valid checkpoint's seq   -> the first missing seq (a truncated tail)
- the newest batch signature not valid                         -> that record (appended outside the gateway)
- records after the newest valid signature                     -> the first of them (appended outside the
                                                                  gateway, with or without a fitting hash)

The last record of each committed batch carries a signature, so an intact trail ends on a signed record.
Only the newest batch signature is verified (an Ed25519 verification costs as much as hashing a few hundred
records); the chain links every earlier record to it. Removing a tail back to an earlier signed record is
caught by a newer checkpoint: checkpoints come every few seconds and are logged outside the database too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.chain import (
    ChainSigner,
    anchor_message,
    batch_message,
    checkpoint_message,
    column_values,
    record_hash,
)
from rzcp.audit.tables import (
    GENESIS_HASH,
    INDEX_COLUMNS,
    audit_anchors,
    audit_checkpoints,
    audit_events,
)
from rzcp.store.db import Database

CHUNK = 20_000

#: What the walker reads, in this order: seq, prev_hash, hash, content, key_id, signature, then the index
#: columns in their hashed form (rzcp.audit.chain): raw driver values, no conversion in Python.
_WALK = (
    "SELECT seq, prev_hash, hash, {content}, key_id, signature, {recorded}, event_id, type_code, subtype, "
    "action, outcome, patient, agent, member_ura, client_id, purpose, {emergency}, correlation_id "
    "FROM audit_events WHERE seq >= {first} ORDER BY seq LIMIT {limit}"
)
SQLITE_WALK = _WALK.format(
    content="content", recorded="recorded", emergency="emergency", first="?", limit="?"
)
_PG = {
    "content": "content",
    "recorded": "to_char(recorded, 'YYYY-MM-DD HH24:MI:SS.US')",
    "emergency": "emergency::int",
}
ASYNCPG_WALK = _WALK.format(**_PG, first="$1", limit="$2")
PG_WALK = _WALK.format(**_PG, first=":first", limit=":limit")


async def _fetch(conn: AsyncConnection, db: Database, first: int, limit: int) -> Sequence[Sequence[Any]]:
    if db.is_sqlite:
        return (await conn.exec_driver_sql(SQLITE_WALK, (first, limit))).all()
    if conn.dialect.driver == "asyncpg":  # straight from the driver: no result processing per row
        raw = await conn.get_raw_connection()
        return await raw.driver_connection.fetch(ASYNCPG_WALK, first, limit)  # type: ignore[union-attr]
    return (await conn.execute(text(PG_WALK), {"first": first, "limit": limit})).all()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    checkpoints: int
    bad_seq: int | None = None
    reason: str | None = None

    def line(self) -> str:
        if self.ok:
            span = f"seq {self.first_seq}..{self.last_seq}" if self.records else "no records"
            return (
                f"audit trail intact: {self.records} records ({span}), "
                f"{self.checkpoints} signed checkpoint{'' if self.checkpoints == 1 else 's'} verified"
            )
        return f"audit trail broken at record {self.bad_seq}: {self.reason}"


class ChainWalker:
    """Checks records fed in seq order against the chain; remembers the first failure and stops there."""

    def __init__(self, start_seq: int, prev_hash: str) -> None:
        self.start_seq = start_seq
        self.expected = start_seq
        self.prev = prev_hash
        self.count = 0
        self.bad_seq: int | None = None
        self.reason: str | None = None
        #: hash of each record in the current chunk, by seq - chunk_start (to check checkpoints).
        self.chunk_start = start_seq
        self.chunk_hashes: list[str] = []
        #: (seq, hash, key_id, signature) of the newest record that carries a batch signature.
        self.last_signed: tuple[int, str, str, str] | None = None

    @property
    def failed(self) -> bool:
        return self.bad_seq is not None

    def fail(self, seq: int, reason: str) -> None:
        if self.bad_seq is None or seq < self.bad_seq:
            self.bad_seq, self.reason = seq, reason

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of (seq, prev_hash, hash, content, key_id, signature, *INDEX_COLUMNS)."""
        expected, prev = self.expected, self.prev
        last_signed = self.last_signed
        self.chunk_start = expected
        hashes: list[str] = []
        append = hashes.append
        for row in rows:
            seq = row[0]
            if seq != expected:
                if seq < expected:
                    self.fail(seq, f"appears twice or out of order (expected seq {expected})")
                else:
                    self.fail(expected, f"is missing (the chain jumps from seq {expected - 1} to {seq})")
                break
            if row[1] != prev:
                self.fail(seq, "its prev_hash does not link to the record before it (moved or replaced)")
                break
            digest = record_hash(seq, prev, row[6:], row[3].encode())
            if digest != row[2]:
                self.fail(seq, "its hash does not match its content (the record was changed)")
                break
            if row[5] is not None:
                last_signed = (seq, digest, row[4], row[5])
            append(digest)
            prev = digest
            expected += 1
        self.count += len(hashes)
        self.expected, self.prev = expected, prev
        self.last_signed = last_signed
        self.chunk_hashes = hashes

    def hash_at(self, seq: int) -> str | None:
        index = seq - self.chunk_start
        if 0 <= index < len(self.chunk_hashes):
            return self.chunk_hashes[index]
        return None


def _check_signed(
    walker: ChainWalker, signer: ChainSigner, rows: Iterable[Any], *, what: str
) -> tuple[int, int]:
    """Check signed checkpoints against the walked chunk; returns (valid count, newest valid seq)."""
    valid, newest = 0, 0
    for row in rows:
        message = checkpoint_message(row.seq, row.hash, row.signed_at)
        if not signer.verify(row.key_id, row.signature, message):
            walker.fail(row.seq, f"the {what} signed at this record has no valid signature (forged?)")
            continue
        valid += 1
        newest = max(newest, row.seq)
        seen = walker.hash_at(row.seq)
        if seen is not None and seen != row.hash:
            walker.fail(row.seq, f"it differs from the signed {what} (the chain was rewritten up to here)")
    return valid, newest


async def _snapshot(conn: AsyncConnection, db: Database) -> None:
    if not db.is_sqlite:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))


async def read_anchor(conn: AsyncConnection, signer: ChainSigner) -> tuple[int, str, str | None]:
    """(seq, hash) where the chain in the database starts, and a failure reason for a bad anchor."""
    row = (await conn.execute(select(audit_anchors).order_by(audit_anchors.c.seq.desc()).limit(1))).first()
    if row is None:
        return 0, GENESIS_HASH, None
    message = anchor_message(row.seq, row.hash, row.archived_at, row.archive_sha256, row.records)
    if not signer.verify(row.key_id, row.signature, message):
        return row.seq, row.hash, "the archive anchor at this record has no valid signature"
    return row.seq, row.hash, None


async def verify_chain(db: Database, signer: ChainSigner, *, chunk: int = CHUNK) -> VerifyResult:
    async with db.read() as conn:
        await _snapshot(conn, db)
        anchor_seq, anchor_hash, anchor_problem = await read_anchor(conn, signer)
        walker = ChainWalker(anchor_seq + 1, anchor_hash)
        if anchor_problem:
            walker.fail(anchor_seq, anchor_problem)
        checkpoints, trusted = 0, anchor_seq
        rows = await _fetch(conn, db, walker.expected, chunk) if not walker.failed else []
        while rows and not walker.failed:
            first, last = rows[0][0], rows[-1][0]
            signed = (
                await conn.execute(
                    select(audit_checkpoints).where(
                        audit_checkpoints.c.seq >= first, audit_checkpoints.c.seq <= last
                    )
                )
            ).all()
            # hash this chunk in a thread while the next one is read (hashlib lets go of the GIL)
            ahead = asyncio.ensure_future(_fetch(conn, db, last + 1, chunk)) if len(rows) == chunk else None
            await asyncio.to_thread(walker.feed, rows)
            valid, newest = _check_signed(walker, signer, signed, what="checkpoint")
            checkpoints += valid
            trusted = max(trusted, newest)
            rows = await ahead if ahead is not None else []
        last_seq = walker.expected - 1
        # Checkpoints beyond the chain's end name records that were signed and are gone.
        later = (
            await conn.execute(select(audit_checkpoints).where(audit_checkpoints.c.seq > last_seq))
        ).all()
        valid, newest = _check_signed(walker, signer, later, what="checkpoint")
        checkpoints += valid
        trusted = max(trusted, newest)
    if walker.last_signed is not None and not walker.failed:
        seq, digest, kid, signature = walker.last_signed
        if signer.verify(kid, signature, batch_message(seq, digest)):
            trusted = max(trusted, seq)
        else:
            walker.fail(seq, "its batch signature is not the gateway's (appended outside the gateway)")
    if not walker.failed:
        if trusted > last_seq:
            walker.fail(
                last_seq + 1,
                f"is missing: the trail ends at seq {last_seq} but seq {trusted} was signed "
                "(the tail was removed)",
            )
        elif last_seq > trusted:
            walker.fail(
                trusted + 1,
                f"no signature covers it (the newest is at seq {trusted}): appended outside the gateway",
            )
    return VerifyResult(
        ok=not walker.failed,
        records=walker.count,
        first_seq=anchor_seq + 1 if walker.count else None,
        last_seq=last_seq if walker.count else None,
        checkpoints=checkpoints,
        bad_seq=walker.bad_seq,
        reason=walker.reason,
    )


# --- archives -------------------------------------------------------------------------------------------


def archive_row(row: Any) -> bytes:
    """One line of an archive file: every hashed field, so the file verifies on its own."""
    data = {
        "seq": row.seq,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "key_id": row.key_id,
        "signature": row.signature,
    }
    for name, value in zip(INDEX_COLUMNS, column_values(row._mapping), strict=True):
        data[name] = value
    data["content"] = row.content
    return orjson.dumps(data) + b"\n"


def _walk_row(data: dict[str, Any]) -> tuple[Any, ...]:
    values = [data[name] for name in INDEX_COLUMNS]
    return (
        data["seq"],
        data["prev_hash"],
        data["hash"],
        data["content"],
        data.get("key_id"),
        data.get("signature"),
        *values,
    )


def verify_archive(path: Path) -> VerifyResult:
    """Walk an archive file written by `rzcp audit archive`: its header gives where its chain starts."""
    with path.open("rb") as handle:
        header = orjson.loads(handle.readline())
        walker = ChainWalker(header["from_seq"], header["prev_hash"])
        batch: list[tuple[Any, ...]] = []
        for line in handle:
            batch.append(_walk_row(orjson.loads(line)))
            if len(batch) >= CHUNK:
                walker.feed(batch)
                batch = []
                if walker.failed:
                    break
        if batch and not walker.failed:
            walker.feed(batch)
    if not walker.failed and walker.expected - 1 != header["to_seq"]:
        walker.fail(
            walker.expected, f"is missing: the archive says it holds records up to {header['to_seq']}"
        )
    return VerifyResult(
        ok=not walker.failed,
        records=walker.count,
        first_seq=header["from_seq"] if walker.count else None,
        last_seq=walker.expected - 1 if walker.count else None,
        checkpoints=0,
        bad_seq=walker.bad_seq,
        reason=walker.reason,
    )


async def iter_rows(
    conn: AsyncConnection, *, after: int = 0, through: int | None = None, chunk: int = CHUNK
) -> AsyncIterator[Any]:
    """Every record with after < seq <= through, in chain order, read in chunks."""
    last = after
    while True:
        query = (
            select(audit_events).where(audit_events.c.seq > last).order_by(audit_events.c.seq).limit(chunk)
        )
        if through is not None:
            query = query.where(audit_events.c.seq <= through)
        rows = (await conn.execute(query)).all()
        for row in rows:
            yield row
        if len(rows) < chunk:
            return
        last = rows[-1].seq
