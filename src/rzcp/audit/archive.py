"""Export and retention of the audit trail.

`export_records` streams records as NDJSON (one AuditEvent per line, as stored: FHIR bulk-data style) or CSV
(the searched columns, seq and hash), optionally from a moment on.

`archive_before` is retention: records younger than the retention period (default five years) are never
removed. Older ones may be moved, as a prefix of the chain, to an NDJSON file:

1. the whole trail is verified first; a broken trail is not archived;
2. the prefix is every record up to the last one recorded before the given date (a prefix, so the chain in the
   database stays one unbroken sequence);
3. the file gets a header line (`from_seq`, `to_seq`, the `prev_hash` it starts from) and one line per record
   with every hashed field, so `rzcp audit verify --archive FILE` checks it on its own; it is written to a
   temporary name, synced and renamed;
4. in one transaction an anchor row (the last archived seq and hash, the file's SHA-256, signed) is inserted
   and the archived rows are deleted. The verifier starts from the newest anchor; on PostgreSQL the
   append-only trigger lets a DELETE through only for rows an anchor covers, and only a role with DELETE on
   the table (the migration owner, not the application's role) can run this.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import delete, func, insert, select

from rzcp.audit.chain import ChainSigner, anchor_message, utcnow
from rzcp.audit.csvfile import csv_line
from rzcp.audit.tables import INDEX_COLUMNS, audit_anchors, audit_events
from rzcp.audit.verify import archive_row, iter_rows, read_anchor, verify_chain
from rzcp.store.db import Database

CSV_COLUMNS = ("seq", *INDEX_COLUMNS, "hash")


async def export_records(
    db: Database, *, since: datetime | None = None, fmt: str = "ndjson", chunk: int = 5000
) -> AsyncIterator[bytes]:
    """The records (recorded at or after `since`, naive UTC) in chain order, as NDJSON or CSV bytes."""
    if fmt not in ("ndjson", "csv"):
        raise ValueError(f"unknown export format {fmt!r}: ndjson or csv")
    after = 0
    if since is not None:
        async with db.read() as conn:
            first = (
                await conn.execute(
                    select(func.min(audit_events.c.seq)).where(audit_events.c.recorded >= since)
                )
            ).scalar()
        if first is None:
            if fmt == "csv":
                yield csv_line(CSV_COLUMNS)
            return
        after = first - 1
    if fmt == "csv":
        yield csv_line(CSV_COLUMNS)
    async with db.read() as conn:
        buffer: list[bytes] = []
        async for row in iter_rows(conn, after=after, chunk=chunk):
            if since is not None and row.recorded < since:
                continue
            if fmt == "ndjson":
                buffer.append(row.content.encode() + b"\n")
            else:
                buffer.append(csv_line([_csv_value(getattr(row, name)) for name in CSV_COLUMNS]))
            if len(buffer) >= chunk:
                yield b"".join(buffer)
                buffer = []
        if buffer:
            yield b"".join(buffer)


def _csv_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


@dataclass(frozen=True)
class ArchiveResult:
    records: int
    from_seq: int | None
    to_seq: int | None
    path: Path | None
    sha256: str | None


async def archive_before(
    db: Database,
    signer: ChainSigner,
    *,
    before: datetime,
    to: Path,
    retention_days: int,
    now: datetime | None = None,
) -> ArchiveResult:
    """Move the records recorded before `before` (naive UTC) to the file `to`; see the module docstring."""
    now = now or utcnow()
    limit = now - timedelta(days=retention_days)
    if before > limit:
        raise ValueError(
            f"records younger than the retention period ({retention_days} days) are kept: "
            f"--before may be at most {limit.date().isoformat()}"
        )
    if to.exists():  # noqa: ASYNC240 - one stat before a long job
        raise ValueError(f"{to} exists already; an archive is never overwritten")
    result = await verify_chain(db, signer)
    if not result.ok:
        raise ValueError(f"the trail does not verify, nothing archived: {result.line()}")
    async with db.write() as conn:
        anchor_seq, anchor_hash, problem = await read_anchor(conn, signer)
        if problem:
            raise ValueError(problem)
        younger = (
            await conn.execute(select(func.min(audit_events.c.seq)).where(audit_events.c.recorded >= before))
        ).scalar()
        if younger is None:
            younger = ((await conn.execute(select(func.max(audit_events.c.seq)))).scalar() or anchor_seq) + 1
        through = younger - 1
        if through <= anchor_seq:
            return ArchiveResult(0, None, None, None, None)
        temporary = to.with_name(to.name + ".partial")
        digest = hashlib.sha256()
        count, last_hash = 0, anchor_hash
        with temporary.open("wb") as handle:
            header = orjson.dumps(
                {
                    "rzcp_audit_archive": 1,
                    "from_seq": anchor_seq + 1,
                    "to_seq": through,
                    "prev_hash": anchor_hash,
                    "archived_at": now.isoformat(timespec="microseconds"),
                }
            )
            for part in (header, b"\n"):
                handle.write(part)
                digest.update(part)
            async for row in iter_rows(conn, after=anchor_seq, through=through):
                line = archive_row(row)
                handle.write(line)
                digest.update(line)
                count, last_hash = count + 1, row.hash
            handle.flush()
            os.fsync(handle.fileno())
        if count != through - anchor_seq:
            temporary.unlink()
            raise ValueError("the trail changed while it was being archived; nothing archived")
        os.replace(temporary, to)
        sha = digest.hexdigest()
        signature = signer.sign(anchor_message(through, last_hash, now, sha, count))
        await conn.execute(
            insert(audit_anchors).values(
                seq=through,
                hash=last_hash,
                archived_at=now,
                archive_name=str(to)[:1024],
                archive_sha256=sha,
                records=count,
                key_id=signature.key_id,
                signature=signature.value,
            )
        )
        await conn.execute(delete(audit_events).where(audit_events.c.seq <= through))
    return ArchiveResult(count, anchor_seq + 1, through, to, sha)
