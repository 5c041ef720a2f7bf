"""Runs of the audit trail's verification, recorded in the database so that every process, the console
and the CLI see the last one, whoever ran it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from rzcp.admin.tables import verify_runs
from rzcp.audit.chain import ChainSigner
from rzcp.audit.verify import VerifyResult, verify_chain
from rzcp.store.db import Database


async def record_run(db: Database, result: VerifyResult, *, seconds: float, by: str) -> dict[str, Any]:
    row = {
        "ran_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        "ok": result.ok,
        "records": result.records,
        "first_bad": result.bad_seq,
        "message": result.line()[:1000],
        "seconds": round(seconds, 3),
        "ran_by": by[:200],
    }
    async with db.write() as conn:
        await conn.execute(verify_runs.insert().values(**row))
    return _shape(row)


async def run_and_record(db: Database, signer: ChainSigner, *, by: str) -> dict[str, Any]:
    """`rzcp audit verify`'s verification, then its record."""
    started = time.perf_counter()
    result = await verify_chain(db, signer)
    return await record_run(db, result, seconds=time.perf_counter() - started, by=by)


async def last_run(db: Database) -> dict[str, Any] | None:
    async with db.read() as conn:
        row = (await conn.execute(select(verify_runs).order_by(verify_runs.c.id.desc()).limit(1))).first()
    return _shape(row._mapping) if row is not None else None


def _shape(row: Any) -> dict[str, Any]:
    return {
        "ran_at": row["ran_at"].isoformat() + "Z",
        "ok": bool(row["ok"]),
        "records": int(row["records"]),
        "first_bad": row["first_bad"],
        "message": row["message"],
        "seconds": float(row["seconds"]),
        "by": row["ran_by"],
    }
