"""The outbox worker while its rounds fail (the database away, or not migrated): it keeps trying, ever
less often, and says so in a line, not a traceback a second per worker (an operator's trial counted 5,400
log lines in 30 s with two workers)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from rzcp.exchange.service import Exchange
from rzcp.exchange.worker import MAX_FAILURE_DELAY, OutboxWorker, failure_delay
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.settings import Settings
from rzcp.store.db import Database


def test_the_wait_doubles_from_the_poll_interval_up_to_a_minute() -> None:
    assert [failure_delay(0.5, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert failure_delay(0.5, 10_000) == MAX_FAILURE_DELAY


async def test_failing_rounds_log_one_traceback_and_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}", outbox_poll_seconds=0.02
    )
    db = Database(settings.database_url)
    exchange = Exchange.build(settings, SearchRegistry.default())
    worker = OutboxWorker(db, exchange, settings)
    caplog.set_level(logging.WARNING, logger="rzcp.exchange.outbox")
    worker.start()
    try:
        await asyncio.sleep(1.0)  # 50 rounds at the poll interval; about 6 with the doubling wait
    finally:
        await worker.stop()
        await exchange.aclose()
        await db.dispose()
    records = [r for r in caplog.records if r.name == "rzcp.exchange.outbox"]
    assert sum(r.exc_info is not None for r in records) == 1
    assert 2 <= len(records) <= 9, [r.getMessage() for r in records]
    assert "rounds failed" in records[-1].getMessage()
