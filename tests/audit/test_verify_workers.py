"""`rzcp audit verify` over stretches walked by worker processes: the same verdict as one walk, the same
record named, wherever in which worker's stretch the tampering sits."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from rzcp.audit import AuditWriter, build_event, verify_chain
from rzcp.audit.chain import ChainSigner, checkpoint_message, column_values, record_hash, utcnow
from rzcp.audit.tables import audit_checkpoints, audit_events
from rzcp.audit.verify import VerifyResult, processes, stretches
from rzcp.cli import main
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade

from .conftest import SIGNER, make_facts, tamper

N = 30  # stretches of seq 1..10, 11..20, 21..30; a checkpoint every 3 records


async def _fill(db: Database, signer: ChainSigner = SIGNER) -> None:
    writer = AuditWriter(db, signer, checkpoint_records=3, checkpoint_seconds=3600)
    for _ in range(N):  # one by one: every record is a batch of its own, signed
        await writer.append(build_event(make_facts()))
    await writer.aclose()


async def _both(db: Database) -> tuple[VerifyResult, VerifyResult]:
    """The trail verified in one walk (small chunks) and in stretches of 10 records shared by this
    process and two workers."""
    one = await verify_chain(db, SIGNER, chunk=4)
    three = await verify_chain(db, SIGNER, chunk=4, workers=3, stretch=10)
    return one, three


def _verdict(result: VerifyResult) -> tuple[bool, int | None, str, int]:
    return result.ok, result.bad_seq, result.line(), result.records


async def _rewrite_from(db: Database, first: int, patient: str) -> None:
    """What an attacker who knows the hash function does: change a record and re-link all after it."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(audit_events).where(audit_events.c.seq >= first - 1).order_by(audit_events.c.seq)
            )
        ).all()
    prev = rows[0].hash
    statements = []
    for row in rows[1:]:
        values = dict(row._mapping)
        if row.seq == first:
            values["patient"] = patient
        digest = record_hash(row.seq, prev, column_values(values), values["content"].encode())
        statements.append(
            f"UPDATE audit_events SET prev_hash = '{prev}', hash = '{digest}', "
            f"patient = '{values['patient']}' WHERE seq = {row.seq}"
        )
        prev = digest
    await tamper(db, *statements)


def test_stretches_cover_the_range_once_in_order() -> None:
    assert stretches(11, 40, 10) == [(11, 20), (21, 30), (31, 40)]
    assert stretches(1, 25, 10) == [(1, 10), (11, 20), (21, 25)]
    assert stretches(5, None, 10) == []  # no records after the anchor
    assert processes(1_000, None) == 1  # a small trail: starting a worker costs more than it saves
    assert processes(1_000, 3) == 3


async def test_intact_trail(audit_db: Database) -> None:
    await _fill(audit_db)
    one, three = await _both(audit_db)
    assert three.ok, three.line()
    assert three == one
    assert three.line() == f"audit trail intact: {N} records (seq 1..{N}), 10 signed checkpoints verified"


@pytest.mark.parametrize(
    ("statement", "seq", "words"),
    [
        # a changed field in the middle of the last stretch
        ("UPDATE audit_events SET outcome = '8' WHERE seq = 25", 25, "hash does not match"),
        # deleted: the first record of a stretch, the last one of the stretch before it
        ("DELETE FROM audit_events WHERE seq = 21", 21, "jumps from seq 20 to 22"),
        ("DELETE FROM audit_events WHERE seq = 10", 10, "jumps from seq 9 to 11"),
        # a whole stretch gone: the next stretch must still link to the one before
        ("DELETE FROM audit_events WHERE seq BETWEEN 11 AND 20", 11, "jumps from seq 10 to 21"),
        # a truncated tail: the last stretch cut short
        ("DELETE FROM audit_events WHERE seq >= 26", 26, "tail was removed"),
    ],
)
async def test_tampering_named_as_in_one_walk(
    audit_db: Database, statement: str, seq: int, words: str
) -> None:
    await _fill(audit_db)
    await tamper(audit_db, statement)
    one, three = await _both(audit_db)
    assert not three.ok and three.bad_seq == seq and words in three.line(), three.line()
    assert _verdict(three) == _verdict(one)


async def test_rows_swapped_across_a_stretch_border(audit_db: Database) -> None:
    await _fill(audit_db)
    await tamper(
        audit_db,
        "UPDATE audit_events SET seq = -1 WHERE seq = 20",
        "UPDATE audit_events SET seq = 20 WHERE seq = 21",
        "UPDATE audit_events SET seq = 21 WHERE seq = -1",
    )
    one, three = await _both(audit_db)
    assert three.bad_seq == 20 and "prev_hash does not link" in three.line()
    assert _verdict(three) == _verdict(one)


async def test_rewritten_stretch_caught_by_a_checkpoint_in_a_later_stretch(audit_db: Database) -> None:
    """Records 23.. changed and re-hashed consistently: only the signed checkpoint at 24 tells."""
    await _fill(audit_db)
    await _rewrite_from(audit_db, 23, "Patient/someone-else")
    one, three = await _both(audit_db)
    assert three.bad_seq == 24 and "differs from the signed checkpoint" in three.line(), three.line()
    assert _verdict(three) == _verdict(one)


async def test_checkpoint_before_a_later_break_in_the_same_stretch(audit_db: Database) -> None:
    """A stretch rewritten from 23 (the checkpoint at 24 tells) and also broken at 28: 24 is named."""
    await _fill(audit_db)
    await _rewrite_from(audit_db, 23, "Patient/someone-else")
    await tamper(audit_db, "UPDATE audit_events SET outcome = '8' WHERE seq = 28")
    one, three = await _both(audit_db)
    assert three.bad_seq == 24 and "differs from the signed checkpoint" in three.line(), three.line()
    assert _verdict(three) == _verdict(one)


async def test_forged_checkpoint_in_a_later_stretch(audit_db: Database) -> None:
    await _fill(audit_db)
    async with audit_db.read() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.seq == 26))).one()
    at = utcnow()
    forged = ChainSigner.derived("attacker").sign(checkpoint_message(26, row.hash, at))
    async with audit_db.write() as conn:
        await conn.execute(
            audit_checkpoints.insert().values(
                seq=26, hash=row.hash, signed_at=at, key_id=forged.key_id, signature=forged.value
            )
        )
    one, three = await _both(audit_db)
    assert three.bad_seq == 26 and "which this verifier does not know" in three.line()
    assert _verdict(three) == _verdict(one)


async def test_first_of_two_tamperings_named(audit_db: Database) -> None:
    """Two stretches find tampering; the earlier one in chain order is the one named."""
    await _fill(audit_db)
    await tamper(
        audit_db,
        "UPDATE audit_events SET outcome = '8' WHERE seq = 27",
        "UPDATE audit_events SET outcome = '8' WHERE seq = 14",
    )
    one, three = await _both(audit_db)
    assert three.bad_seq == 14
    assert _verdict(three) == _verdict(one)


def test_cli_verify_with_workers(scratch_url: str) -> None:
    signer = ChainSigner.derived("audit-cli-tests")
    env = {"RZCP_DATABASE_URL": scratch_url, "RZCP_SECRET_KEY": "audit-cli-tests"}

    async def fill(*statements: str) -> None:
        db = Database(scratch_url)
        try:
            if not statements:
                await upgrade(db)
                await _fill(db, signer)
            else:
                await tamper(db, *statements)
        finally:
            await db.dispose()

    asyncio.run(fill())
    ok = CliRunner().invoke(main, ["audit", "verify", "--workers", "3"], env=env)
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith(f"audit trail intact: {N} records (seq 1..{N})")

    asyncio.run(fill("UPDATE audit_events SET member_ura = '99999999' WHERE seq = 28"))
    broken = CliRunner().invoke(main, ["audit", "verify", "--workers", "3"], env=env)
    assert broken.exit_code == 1
    assert broken.stderr.strip() == (
        "audit trail broken at record 28: its hash does not match its content (the record was changed)"
    )

    refused = CliRunner().invoke(main, ["audit", "verify", "--workers", "0"], env=env)
    assert refused.exit_code == 2  # a usage error, not a verdict
