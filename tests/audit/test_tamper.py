"""Tampering, each caught by `rzcp audit verify` with the right record named; and the append-only guards."""

from __future__ import annotations

import asyncio
import os

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from rzcp.audit import AuditWriter, build_event, verify_chain
from rzcp.audit.chain import ChainSigner, batch_message, canonical, column_values, record_hash
from rzcp.audit.events import index_columns
from rzcp.audit.tables import audit_checkpoints, audit_events
from rzcp.cli import main
from rzcp.store.db import Database

from .conftest import SIGNER, make_facts, tamper

N = 10


async def _fill(db: Database, n: int = N, **kw: object) -> AuditWriter:
    writer = AuditWriter(db, SIGNER, **kw)  # type: ignore[arg-type]
    for _ in range(n):  # one by one: a batch (and a signed head) per record
        await writer.append(build_event(make_facts()))
    await writer.aclose()
    result = await verify_chain(db, SIGNER)
    assert result.ok, result.line()
    return writer


async def _broken_at(db: Database) -> tuple[int | None, str]:
    result = await verify_chain(db, SIGNER, chunk=4)  # small chunks: failures across chunk borders too
    assert not result.ok, "tampering went unnoticed"
    return result.bad_seq, result.line()


async def test_changed_content(audit_db: Database) -> None:
    await _fill(audit_db)
    await tamper(audit_db, "UPDATE audit_events SET content = replace(content, 'TREAT', 'COC') WHERE seq = 5")
    seq, line = await _broken_at(audit_db)
    assert seq == 5 and "hash does not match" in line


async def test_changed_index_column(audit_db: Database) -> None:
    await _fill(audit_db)
    await tamper(audit_db, "UPDATE audit_events SET patient = 'Patient/someone-else' WHERE seq = 7")
    assert (await _broken_at(audit_db))[0] == 7


async def test_deleted_row(audit_db: Database) -> None:
    await _fill(audit_db)
    await tamper(audit_db, "DELETE FROM audit_events WHERE seq = 4")
    seq, line = await _broken_at(audit_db)
    assert seq == 4 and "missing" in line


async def test_two_rows_swapped(audit_db: Database) -> None:
    await _fill(audit_db)
    await tamper(
        audit_db,
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -1",
    )
    assert (await _broken_at(audit_db))[0] == 3


async def test_contents_swapped(audit_db: Database) -> None:
    """Two records' contents and columns swapped, seq and hashes left in place."""
    await _fill(audit_db)
    async with audit_db.read() as conn:
        a, b = (await conn.execute(select(audit_events).where(audit_events.c.seq.in_([6, 8])))).all()
    await tamper(
        audit_db,
        "UPDATE audit_events SET content = :b, event_id = :bid WHERE seq = 6",
        "UPDATE audit_events SET content = :a, event_id = :aid WHERE seq = 8",
        params={"a": a.content, "b": b.content, "aid": a.event_id, "bid": b.event_id},
    )
    assert (await _broken_at(audit_db))[0] == 6


async def test_truncated_tail(audit_db: Database) -> None:
    await _fill(audit_db)
    await tamper(audit_db, "DELETE FROM audit_events WHERE seq >= 8")
    seq, line = await _broken_at(audit_db)
    assert seq == 8 and "tail was removed" in line


async def test_truncated_tail_back_to_a_signed_record(audit_db: Database) -> None:
    """Every batch's last record is signed: cut back to one of them, a later checkpoint tells."""
    await _fill(audit_db, checkpoint_records=3, checkpoint_seconds=3600)
    async with audit_db.read() as conn:
        checkpoints = (await conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))).all()
    assert [c.seq for c in checkpoints] == [3, 6, 9, 10]  # every 3 records, and when the writer closed
    await tamper(audit_db, "DELETE FROM audit_events WHERE seq > 6")
    seq, line = await _broken_at(audit_db)
    assert seq == 7 and "seq 10 was signed" in line


async def _forge_next(db: Database, *, sign: bool) -> None:
    async with db.read() as conn:
        last = (await conn.execute(select(audit_events).order_by(audit_events.c.seq.desc()).limit(1))).one()
    event = build_event(make_facts(patient="Patient/p-forged"))
    columns = index_columns(event)
    content = canonical(event)
    seq = last.seq + 1
    digest = record_hash(seq, last.hash, column_values(columns), content)
    values = {**columns, "seq": seq, "prev_hash": last.hash, "hash": digest, "content": content.decode()}
    if sign:  # with a key of the attacker's own, not the gateway's
        forged = ChainSigner.derived("attacker").sign(batch_message(seq, digest))
        values.update(key_id=forged.key_id, signature=forged.value)
    async with db.write() as conn:
        await conn.execute(audit_events.insert().values(**values))


async def test_forged_row_appended(audit_db: Database) -> None:
    await _fill(audit_db)
    await _forge_next(audit_db, sign=False)
    seq, line = await _broken_at(audit_db)
    assert seq == N + 1 and "no signature covers it" in line


async def test_forged_row_appended_with_forged_signature(audit_db: Database) -> None:
    await _fill(audit_db)
    await _forge_next(audit_db, sign=True)
    seq, line = await _broken_at(audit_db)
    # signed with a key the verifier was not given: a rotated key reads alike, so the line names both
    assert seq == N + 1 and "which this verifier does not know" in line and "forged" in line


async def test_trail_continues_after_verification(audit_db: Database) -> None:
    """A writer started after another (a restart) continues the chain from the head in the database."""
    await _fill(audit_db, 3)
    await _fill(audit_db, 4)
    result = await verify_chain(audit_db, SIGNER)
    assert result.ok and result.records == 7


# --- the guards -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = '0'",
        "DELETE FROM audit_events WHERE seq = 2",
        "UPDATE audit_checkpoints SET hash = 'x'",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_anchors",
    ],
)
async def test_append_only_triggers_refuse(audit_db: Database, statement: str) -> None:
    """As superuser even: the trigger refuses UPDATE and DELETE (on SQLite the same triggers)."""
    await _fill(audit_db, 3, checkpoint_records=1)
    if "anchors" in statement:
        async with audit_db.write() as conn:
            await conn.execute(
                text(
                    "INSERT INTO audit_anchors (seq, hash, archived_at, archive_name, archive_sha256, "
                    "records, key_id, signature) VALUES (0, 'h', '2020-01-01', 'f', 's', 0, 'k', 's')"
                )
            )
    with pytest.raises(DBAPIError, match="append-only"):
        async with audit_db.write() as conn:
            await conn.execute(text(statement))
    if "anchors" not in statement:  # (the anchor above is not signed: verify would rightly refuse it)
        assert (await verify_chain(audit_db, SIGNER)).ok


async def test_postgresql_refuses_truncate_and_app_role_rights(audit_db: Database) -> None:
    if audit_db.is_sqlite:
        pytest.skip("TRUNCATE and roles are PostgreSQL's")
    await _fill(audit_db, 2)
    with pytest.raises(DBAPIError, match="append-only"):
        async with audit_db.write() as conn:
            await conn.execute(text("TRUNCATE audit_events"))
    # the application role's rights: as the migration leaves them for a role that existed beforehand
    from importlib import util
    from pathlib import Path

    import rzcp.store.migrations as migrations

    path = next(Path(migrations.__file__).parent.glob("versions/*-0004_audit_trail.py"))
    spec = util.spec_from_file_location("m0004", path)
    assert spec and spec.loader
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    role = f"rzcp_app_test_{os.getpid()}"
    async with audit_db.write() as conn:
        await conn.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        try:
            await conn.execute(text(f"GRANT ALL ON audit_events, audit_checkpoints, audit_anchors TO {role}"))
            for statement in module.app_role_statements(role):
                await conn.execute(text(statement))
            rights = {
                (table, right): (
                    await conn.execute(text(f"SELECT has_table_privilege('{role}', '{table}', '{right}')"))
                ).scalar()
                for table in ("audit_events", "audit_checkpoints")
                for right in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
            }
        finally:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))
    assert rights[("audit_events", "INSERT")] and rights[("audit_events", "SELECT")]
    assert not rights[("audit_events", "UPDATE")] and not rights[("audit_events", "DELETE")]
    assert not rights[("audit_events", "TRUNCATE")] and not rights[("audit_checkpoints", "DELETE")]


# --- the command ----------------------------------------------------------------------------------------


def _verify_cli(url: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["audit", "verify"],
        env={"RZCP_DATABASE_URL": url, "RZCP_SECRET_KEY": "audit-cli-tests"},
    )
    return result.exit_code, result.stdout, result.stderr


def test_cli_verify(scratch_url: str) -> None:
    signer = ChainSigner.derived("audit-cli-tests")

    async def fill() -> None:
        db = Database(scratch_url)
        try:
            from rzcp.store.migrate import upgrade

            await upgrade(db)
            writer = AuditWriter(db, signer)
            for _ in range(5):
                await writer.append(build_event(make_facts()))
            await writer.aclose()
            await tamper(db)  # triggers off (SQLite: dropped) for the next step
        finally:
            await db.dispose()

    asyncio.run(fill())
    code, out, err = _verify_cli(scratch_url)
    assert code == 0, err
    assert out.strip() == "audit trail intact: 5 records (seq 1..5), 1 signed checkpoint verified"

    async def change() -> None:
        db = Database(scratch_url)
        try:
            await tamper(db, "UPDATE audit_events SET member_ura = '99999999' WHERE seq = 2")
        finally:
            await db.dispose()

    asyncio.run(change())
    code, out, err = _verify_cli(scratch_url)
    assert code == 1
    assert (
        err.strip()
        == "audit trail broken at record 2: its hash does not match its content (the record was changed)"
    )
