"""A database error's values never reach the log: its text goes there with the traceback of an unhandled
error, and the values of a failed statement are patient data (an operator's walkthrough found a letter's
BSN, name and text in the log after a push whose outbox write was refused; a review found PostgreSQL's
DETAIL, "Failing row contains (...)", in the chained exception of a traceback)."""

from __future__ import annotations

import io
import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from rzcp.logs import NoDatabaseValues, UtcFormatter
from rzcp.store.db import Database

BSN = "999967551"


def logged(exc: BaseException) -> str:
    """What the gateway's log handler writes for `log.exception` of this error."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(UtcFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(NoDatabaseValues())
    logger = logging.getLogger("rzcp.test.db-errors")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("the outbox write failed") from exc
        except RuntimeError:
            logger.exception("outbox worker w1: delivering %s failed", "m-1")
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


async def test_a_failed_statement_does_not_carry_its_values(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.write() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS probe_values"))
            create = "CREATE TABLE probe_values (k TEXT PRIMARY KEY, v TEXT, w TEXT NOT NULL)"
            await conn.execute(text(create))
            await conn.execute(text("INSERT INTO probe_values VALUES ('a', :v, 'x')"), {"v": f"bsn {BSN}"})
        statements = (
            "INSERT INTO probe_values VALUES ('a', :v, 'x')",  # the key taken
            "INSERT INTO probe_values VALUES ('b', :v, NULL)",  # NOT NULL: PostgreSQL shows the whole row
        )
        for session in (db.write, db.query):
            for statement in statements:
                with pytest.raises(DBAPIError) as failed:
                    async with session() as conn:
                        await conn.execute(text(statement), {"v": f"BSN {BSN} Jan Jansen"})
                assert BSN not in str(failed.value) and "parameters hidden" in str(failed.value)
                line = logged(failed.value)
                assert BSN not in line and "Jansen" not in line, line
                assert line.startswith("ERROR rzcp.test.db-errors: outbox worker w1: delivering m-1 failed [")
                assert "its text withheld from the log" in line and "Traceback" not in line
    finally:
        async with db.write() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS probe_values"))
        await db.dispose()


def test_other_errors_keep_their_traceback() -> None:
    line = logged(ValueError("a bug of ours"))
    assert "Traceback" in line and "ValueError: a bug of ours" in line
