"""Export as NDJSON and CSV; archive past retention, with the chain verifiable before and after."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from rzcp.audit import AuditWriter, build_event, verify_chain
from rzcp.audit.archive import archive_before, export_records
from rzcp.audit.chain import utcnow
from rzcp.audit.verify import verify_archive
from rzcp.store.db import Database

from .conftest import SIGNER, make_facts, tamper

NOW = datetime(2032, 6, 1, 12, 0, 0)


async def _collect(db: Database, **kw: object) -> bytes:
    return b"".join([part async for part in export_records(db, **kw)])  # type: ignore[arg-type]


async def _write(writer: AuditWriter, moments: list[datetime]) -> list[dict]:
    events = [build_event(make_facts(recorded=m.replace(tzinfo=UTC))) for m in moments]
    for event in events:
        await writer.append(event)
    return events


async def test_export_ndjson_and_csv(audit_db: Database, writer: AuditWriter) -> None:
    moments = [datetime(2026, 1, day, 9, 30) for day in range(1, 6)]
    events = await _write(writer, moments)
    lines = (await _collect(audit_db)).splitlines()
    assert [orjson.loads(line) for line in lines] == events
    since = await _collect(audit_db, since=datetime(2026, 1, 3))
    assert [orjson.loads(line)["id"] for line in since.splitlines()] == [e["id"] for e in events[2:]]
    table = list(csv.DictReader(io.StringIO((await _collect(audit_db, fmt="csv")).decode())))
    assert [row["seq"] for row in table] == ["1", "2", "3", "4", "5"]
    assert table[0]["recorded"] == "2026-01-01T09:30:00.000Z"
    assert table[0]["patient"] == "Patient/p1" and table[0]["emergency"] == "false"
    assert table[0]["event_id"] == events[0]["id"] and len(table[0]["hash"]) == 64
    assert await _collect(audit_db, since=datetime(2030, 1, 1)) == b""
    with pytest.raises(ValueError, match="unknown export format"):
        await _collect(audit_db, fmt="xml")


async def test_archive_then_verify(audit_db: Database, writer: AuditWriter, tmp_path: Path) -> None:
    old = [NOW - timedelta(days=3000 - i) for i in range(6)]  # over eight years ago
    recent = [NOW - timedelta(days=30 - i) for i in range(4)]
    await _write(writer, old + recent)
    target = tmp_path / "audit-2024.ndjson"
    # younger than the retention period: refused, nothing moved
    with pytest.raises(ValueError, match="retention period"):
        await archive_before(
            audit_db, SIGNER, before=NOW - timedelta(days=100), to=target, retention_days=1827, now=NOW
        )
    result = await archive_before(
        audit_db, SIGNER, before=NOW - timedelta(days=2000), to=target, retention_days=1827, now=NOW
    )
    assert (result.records, result.from_seq, result.to_seq) == (6, 1, 6)
    verified = await verify_chain(audit_db, SIGNER)
    assert verified.ok, verified.line()
    assert (verified.records, verified.first_seq, verified.last_seq) == (4, 7, 10)
    archived = verify_archive(target)
    assert archived.ok and archived.records == 6, archived.line()
    # the chain goes on; a second archive continues from the anchor
    await _write(writer, [utcnow()])
    assert (await verify_chain(audit_db, SIGNER)).ok
    nothing = await archive_before(
        audit_db,
        SIGNER,
        before=NOW - timedelta(days=2000),
        to=tmp_path / "again.ndjson",
        retention_days=1827,
        now=NOW,
    )
    assert nothing.records == 0
    # never overwrite an archive
    with pytest.raises(ValueError, match="exists already"):
        await archive_before(
            audit_db, SIGNER, before=NOW - timedelta(days=2000), to=target, retention_days=1827, now=NOW
        )
    # an edited archive file is caught too
    lines = target.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"Patient/p1", b"Patient/p2")
    target.write_bytes(b"".join(lines))
    broken = verify_archive(target)
    assert not broken.ok and broken.bad_seq == 3


async def test_deleting_archived_head_is_detected(audit_db: Database, writer: AuditWriter) -> None:
    """Rows removed from the chain's start without an anchor: the verifier names the first one."""
    await _write(writer, [NOW - timedelta(days=10)] * 4)
    await tamper(audit_db, "DELETE FROM audit_events WHERE seq <= 2")
    result = await verify_chain(audit_db, SIGNER)
    assert not result.ok and result.bad_seq == 1
