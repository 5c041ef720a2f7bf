"""Verification of the audit trail: the hash chain, its signed checkpoints and head, and its archive anchor.

`verify_chain` reads the whole trail in one read-only snapshot (REPEATABLE READ on PostgreSQL; one SQLite
read transaction), in chunks by seq, and names the first bad record in chain order:

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

With `workers` > 1 the seq range is cut into stretches, walked by this process and worker processes side
by side, each on its own connection (on PostgreSQL in this snapshot, exported to them): every record within
a stretch is checked against the one before it there, and this process links each stretch's first record to
the previous stretch's last one, so every link is still checked and the verdict and the record named are
the same as walking in one piece (rzcp.audit.walk).
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.chain import (
    ChainSigner,
    anchor_message,
    batch_message,
    checkpoint_message,
    column_values,
)
from rzcp.audit.tables import (
    GENESIS_HASH,
    INDEX_COLUMNS,
    audit_anchors,
    audit_checkpoints,
    audit_events,
)
from rzcp.audit.walk import CHUNK, ChainWalker, Stretch, WalkerProcess, begin_snapshot, walk_stretch
from rzcp.store.db import Database

#: Records a process takes at a time when several walk the chain: about half a second's work.
STRETCH = 50_000
#: With `workers=None`, records from which more processes walk the chain: a worker process spends about
#: 0.4 s of CPU importing before it reads a record, what walking some 40,000 records costs.
MIN_PARALLEL = 200_000


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


def stretches(first: int, last: int | None, size: int) -> list[tuple[int, int]]:
    """first..last cut into consecutive seq ranges of `size` records (the last one shorter)."""
    if last is None or last < first:
        return []
    return [(lo, min(lo + size - 1, last)) for lo in range(first, last + 1, size)]


def processes(records: int, workers: int | None) -> int:
    """How many processes walk `records`: `workers`, or for None one per CPU on a big trail."""
    if workers is not None:
        return workers
    return (os.cpu_count() or 1) if records >= MIN_PARALLEL else 1


async def _walk(
    db: Database,
    conn: AsyncConnection,
    parts: list[tuple[int, int]],
    marks: list[int],
    chunk: int,
    workers: int,
) -> list[Stretch | None]:
    """Walk the stretches: this process on `conn` and `workers - 1` worker processes, each taking the
    next stretch when done with one, so that a worker that starts late or gets less CPU does less.

    No stretch after one that failed is started (the first failure is the one named); those stay None.
    """
    walked: list[Stretch | None] = [None] * len(parts)
    todo = iter(range(len(parts)))  # shared: each taker gets the next stretch
    failed = [len(parts)]

    def own(i: int) -> list[int]:
        lo, hi = parts[i]
        return marks[bisect_left(marks, lo) : bisect_right(marks, hi)]

    def keep(i: int, stretch: Stretch) -> None:
        walked[i] = stretch
        if stretch.bad_seq is not None:
            failed[0] = min(failed[0], i)

    async def here() -> None:
        for i in todo:
            if i > failed[0]:
                return
            keep(i, await walk_stretch(conn, db, *parts[i], own(i), chunk))

    async def elsewhere(snapshot: str | None) -> None:
        worker = await WalkerProcess.start(db.url, snapshot)
        try:
            for i in todo:
                if i > failed[0]:
                    return
                keep(i, await worker.walk(*parts[i], own(i), chunk))
        finally:
            await worker.close()

    workers = min(workers, len(parts))
    snapshot = None
    if workers > 1 and not db.is_sqlite:  # this transaction stays open until the workers are done
        snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
    async with asyncio.TaskGroup() as group:  # a worker failing (not a bad record: an error) stops all
        for _ in range(workers - 1):
            group.create_task(elsewhere(snapshot))
        group.create_task(here())
    return walked


async def read_anchor(conn: AsyncConnection, signer: ChainSigner) -> tuple[int, str, str | None]:
    """(seq, hash) where the chain in the database starts, and a failure reason for a bad anchor."""
    row = (await conn.execute(select(audit_anchors).order_by(audit_anchors.c.seq.desc()).limit(1))).first()
    if row is None:
        return 0, GENESIS_HASH, None
    message = anchor_message(row.seq, row.hash, row.archived_at, row.archive_sha256, row.records)
    if not signer.verify(row.key_id, row.signature, message):
        return row.seq, row.hash, _unverified("the archive anchor at this record", row.key_id, signer)
    return row.seq, row.hash, None


async def verify_chain(
    db: Database,
    signer: ChainSigner,
    *,
    chunk: int = CHUNK,
    workers: int | None = 1,
    stretch: int = STRETCH,
) -> VerifyResult:
    """`workers`: processes that walk the chain, this one included (None: one per CPU on a big trail),
    taking `stretch` records at a time."""
    async with db.read() as conn:
        await begin_snapshot(conn, db)
        anchor_seq, anchor_hash, anchor_problem = await read_anchor(conn, signer)
        walker = ChainWalker(anchor_seq + 1, anchor_hash)
        parts: list[tuple[int, int]] = []
        count = 1
        if anchor_problem:
            walker.fail(anchor_seq, anchor_problem)
        else:
            newest = (
                await conn.execute(
                    select(func.max(audit_events.c.seq)).where(audit_events.c.seq > anchor_seq)
                )
            ).scalar_one()
            span = newest - anchor_seq if newest is not None else 0
            count = processes(span, workers)
            parts = stretches(anchor_seq + 1, newest, stretch if count > 1 else max(span, 1))
        signed = (
            await conn.execute(
                select(audit_checkpoints)
                .where(audit_checkpoints.c.seq > anchor_seq)
                .order_by(audit_checkpoints.c.seq)
            )
        ).all()
        marks = [row.seq for row in signed]
        walked = await _walk(db, conn, parts, marks, chunk, count)
    for part in walked:
        if part is None or not walker.join(part):
            break
    last_seq = walker.expected - 1
    checkpoints, trusted = 0, anchor_seq
    for row in signed:
        if not signer.verify(row.key_id, row.signature, checkpoint_message(row.seq, row.hash, row.signed_at)):
            walker.fail(row.seq, _unverified("the checkpoint signed at this record", row.key_id, signer))
            continue
        checkpoints += 1
        trusted = max(trusted, row.seq)
        seen = walker.marks.get(row.seq)  # only records that verified: the first bad one comes after
        if seen is not None and seen != row.hash:
            walker.fail(row.seq, "it differs from the signed checkpoint (the chain was rewritten up to here)")
    if walker.last_signed is not None and not walker.failed:
        seq, digest, kid, signature = walker.last_signed
        if signer.verify(kid, signature, batch_message(seq, digest)):
            trusted = max(trusted, seq)
        else:
            if signer.knows(kid):
                walker.fail(seq, "its batch signature is not the gateway's (appended outside the gateway)")
            else:
                walker.fail(seq, _unverified("its batch signature", kid, signer))
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
        data["content"].encode(),
        data.get("key_id"),
        data.get("signature"),
        *values,
    )


class ArchiveFormatError(ValueError):
    """The file is not an archive `rzcp audit archive` wrote (an export, say): there is no chain to walk."""


def _archive_line(line: bytes, number: int, path: Path) -> tuple[Any, ...]:
    try:
        return _walk_row(orjson.loads(line))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ArchiveFormatError(f"{path}: line {number} is not an archived audit record") from None


def verify_archive(path: Path) -> VerifyResult:
    """Walk an archive file written by `rzcp audit archive`: its header gives where its chain starts."""
    with path.open("rb") as handle:
        try:
            header = orjson.loads(handle.readline())
        except orjson.JSONDecodeError:
            header = None
        if not (
            isinstance(header, dict)
            and isinstance(header.get("from_seq"), int)
            and isinstance(header.get("to_seq"), int)
            and isinstance(header.get("prev_hash"), str)
        ):
            raise ArchiveFormatError(
                f"{path} is not an archive written by `rzcp audit archive` (its first line is not the "
                "archive's header); an export (`rzcp audit export`) is checked by `rzcp audit verify` on "
                "the database it came from"
            )
        walker = ChainWalker(header["from_seq"], header["prev_hash"])
        batch: list[tuple[Any, ...]] = []
        for number, line in enumerate(handle, start=2):
            batch.append(_archive_line(line, number, path))
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


def _unverified(what: str, kid: str | None, signer: ChainSigner) -> str:
    """Why a signature did not verify: a key this verifier was not given (a rotated one, or none set)
    reads otherwise than a signature that fails with a key it knows (a forgery, or a changed record)."""
    if not signer.knows(kid):
        return (
            f"{what} is signed with key {kid or '(none)'}, which this verifier does not know: give its "
            "public key in RZCP_AUDIT_VERIFY_KEYS (a rotated or another process's key), or it was forged"
        )
    return f"{what} has no valid signature (forged?)"
