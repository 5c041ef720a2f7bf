"""The console's audit queries at 1,000,000 records as a ratio to the same queries at 10,000 records, in
the same run, on SQLite and PostgreSQL (issue 8: under 3x slower at 100x the data, each well under 1 s).

    /tmp/venv/bin/python bench/bench_admin_audit.py [--db sqlite|postgresql|both] [--small 10000]
                                                    [--large 1000000] [--rounds 5]

Each size gets a fresh database (migrated to head) filled with direct bulk INSERTs of AuditEvents built by
rzcp.audit.events (the hash columns are filler: verification is not measured here, bench_audit.py does).
The trail grows as a region's does: 2,000 records a day over 20 members, a patient has ~50 records and a
practitioner ~500 (spread over the whole trail), so a bigger trail is a longer one, not a denser one: a
patient's, a practitioner's and a member's last two days match as many records at both sizes, a member's
whole trail 100x as many. Queries (medians of `--rounds`), each the console's answer
(rzcp.admin.audit_views.search: a page of 20 summaries, newest first, and the total, exact up to 1000):

- patient: the console's search by BSN after the locator's look-up (50 matches at both sizes);
- practitioner: a bare number as the console asks it, three `agent` values (500 matches at both sizes);
- member+period: by member over the last two days (200 matches at both sizes);
- member: by member over the whole trail (500 vs 50,000 matches: the total stops at 1000);
- chart: `exchange_stats` over the last 30 days, counting the 200 records written since the last look
  (writing them, the audit writer's work, is outside the timing). The 10k trail is 5 days long, so its
  chart has 5 days of data against 30 at 1M.
The first count of the whole trail (rzcp.admin.rollup.catch_up) is reported in records per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy import insert

from rzcp.admin.audit_views import search
from rzcp.admin.rollup import catch_up
from rzcp.admin.stats import exchange_stats
from rzcp.audit.chain import canonical
from rzcp.audit.events import AuditFacts, Decision, Practitioner, build_event, index_columns
from rzcp.audit.tables import audit_events
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade

PG = "postgresql://postgres@127.0.0.1:5432"
PER_DAY, MEMBERS, PER_PATIENT, PER_PRACTITIONER = 2000, 20, 50, 500
START = datetime(2024, 1, 1)
UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
SYSTEMS = [UZI, "http://fhir.nl/fhir/NamingSystem/agb-z", "http://fhir.nl/fhir/NamingSystem/big"]


def ura(i: int) -> str:
    return f"{10_000_000 + i:08d}"


_TEMPLATES: dict[tuple[int, bool, bool], tuple[str, dict[str, object]]] = {}


def _template(member: int, refused: bool, emergency: bool) -> tuple[str, dict[str, object]]:
    """An AuditEvent built by rzcp.audit.events once per shape, with placeholders for what varies."""
    key = (member, refused, emergency)
    if key not in _TEMPLATES:
        facts = AuditFacts(
            interaction="search-type",
            status=403 if refused else 200,
            correlation_id="CORRELATION",
            kind="system",
            member_ura=ura(member),
            client_id=f"ehr-{member}",
            practitioner=Practitioner(UZI, "PRACTITIONER"),
            patient="Patient/PATIENT",
            resource_type="Condition",
            query="patient=x&_count=50",
            purpose="ETREAT" if emergency else "TREAT",
            decisions=(Decision(True, ura((member + 1) % MEMBERS), "Condition", rule="default-permit"),),
            recorded=START,
            event_id="EVENTID",
        )
        event = build_event(facts)
        _TEMPLATES[key] = (canonical(event).decode(), index_columns(event))
    return _TEMPLATES[key]


def row(seq: int, n: int) -> dict[str, object]:
    patients, practitioners = max(n // PER_PATIENT, 1), max(n // PER_PRACTITIONER, 1)
    content, columns = _template(seq % MEMBERS, seq % 17 == 0, seq % 97 == 0)
    recorded = START + timedelta(milliseconds=seq * 86_400_000 // PER_DAY)
    stamp = recorded.isoformat(timespec="milliseconds") + "Z"
    patient, practitioner, event_id = (
        f"p{(seq * 104729) % patients}",
        f"9{(seq * 7919) % practitioners:08d}",
        f"e{seq}",
    )
    content = (
        content.replace("PATIENT", patient)
        .replace("PRACTITIONER", practitioner)
        .replace("EVENTID", event_id)
        .replace(START.isoformat(timespec="milliseconds") + "Z", stamp)
    )
    varying = {"seq": seq, "recorded": recorded, "event_id": event_id, "patient": f"Patient/{patient}"}
    filler = {"correlation_id": None, "prev_hash": "0" * 64, "hash": "0" * 64}
    return {**columns, **varying, **filler, "agent": f"{UZI}|{practitioner}", "content": content}


async def fill(db: Database, n: int) -> float:
    started = time.perf_counter()
    batch = 20_000
    for lo in range(1, n + 1, batch):
        rows = [row(seq, n) for seq in range(lo, min(lo + batch, n + 1))]
        async with db.write() as conn:
            await conn.execute(insert(audit_events), rows)
    if not db.is_sqlite:
        async with db.write() as conn:
            await conn.exec_driver_sql("ANALYZE audit_events")
    else:
        async with db.write() as conn:
            await conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


async def timed(work, rounds: int, setup=None) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of `work` (after one warm-up); `setup` runs before each, outside the timing."""
    samples = []
    for i in range(rounds + 1):
        if setup is not None:
            await setup()
        started = time.perf_counter()
        await work()
        if i:
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def measure(url: str, n: int, rounds: int) -> dict[str, float]:
    db = Database(url)
    try:
        await upgrade(db)
        fill_s = await fill(db, n)
        started = time.perf_counter()
        await catch_up(db)
        first_count = n / (time.perf_counter() - started)
        last_day = START + timedelta(seconds=n * 86400 / PER_DAY)
        week = {"since": last_day - timedelta(days=2), "until": last_day}
        patient = f"Patient/p{(n // 2 * 104729) % max(n // PER_PATIENT, 1)}"
        practitioner = f"9{(n // 2 * 7919) % max(n // PER_PRACTITIONER, 1):08d}"
        head = [n]

        async def write_200() -> None:
            rows = [row(seq, n) for seq in range(head[0] + 1, head[0] + 201)]
            head[0] += 200
            async with db.write() as conn:
                await conn.execute(insert(audit_events), rows)

        days = [(last_day - timedelta(days=i)).date() for i in range(29, -1, -1)]
        searches = {
            "patient": {"patient": patient},
            "practitioner": {"agent": [f"{s}|{practitioner}" for s in SYSTEMS]},
            "member+period": {"member": ura(3), **week},
            "member": {"member": ura(3)},
        }
        results = {
            name: await timed(lambda found=found: search(db, found, count=20, page=None), rounds)
            for name, found in searches.items()
        }
        results["chart"] = await timed(lambda: exchange_stats(db, days), rounds, setup=write_200)
        print(f"  {n:>9,} records: filled in {fill_s:.0f} s; first count {first_count:,.0f} records/s; "
              + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in results.items()), flush=True)  # fmt: skip
        return results
    finally:
        await db.dispose()


async def pg_database(name: str, *, drop_only: bool = False) -> str:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{PG.replace('postgresql', 'postgresql+asyncpg')}/{name}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for backend in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        print(f"{backend}:", flush=True)
        figures = {}
        for n in (args.small, args.large):
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as folder:
                    figures[n] = await measure(f"sqlite+aiosqlite:///{Path(folder) / 'a.db'}", n, args.rounds)
            else:
                url = await pg_database("rzcp_bench_admin")
                try:
                    figures[n] = await measure(url, n, args.rounds)
                finally:
                    await pg_database("rzcp_bench_admin", drop_only=True)
        for query in figures[args.small]:
            ratio = figures[args.large][query] / figures[args.small][query]
            print(f"  {query:<14} {ratio:5.2f}x at {args.large // args.small}x the records "
                  f"({figures[args.large][query] * 1000:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
