"""A database error carries no values: its text goes to the log with the traceback of an unhandled error,
and the values of a failed INSERT are patient data (an operator's walkthrough found a letter's BSN, name
and text in the log after a push whose outbox write was refused)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from rzcp.store.db import Database

BSN = "999967551"


async def test_a_failed_statement_does_not_carry_its_values(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS probe_values (k TEXT PRIMARY KEY, v TEXT)"))
            await conn.execute(text("DELETE FROM probe_values"))
            await conn.execute(text("INSERT INTO probe_values VALUES ('a', :v)"), {"v": f"bsn {BSN}"})
        for session in (db.write, db.query):
            with pytest.raises(DBAPIError) as failed:
                async with session() as conn:
                    await conn.execute(text("INSERT INTO probe_values VALUES ('a', :v)"), {"v": f"BSN {BSN}"})
            assert BSN not in str(failed.value) and "parameters hidden" in str(failed.value)
    finally:
        async with db.write() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS probe_values"))
        await db.dispose()
