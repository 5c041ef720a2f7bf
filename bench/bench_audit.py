"""The audit trail's benchmark: append throughput with the hash chain against plain inserts, and verify speed.

    python bench/bench_audit.py [--db sqlite|postgresql|both] [--records N] [--rounds N] [--verify-records N]
                                [--verify-rounds N] [--skip-append]

For each database a scratch database is migrated to head and given a second table, `bench_audit_plain`, with
the same columns and indexes as audit_events but no chain (an autoincremented key, no prev_hash/hash). Under
1, 8 and 64 concurrent writers (asyncio tasks, each awaiting its record as a request would) it appends
--records AuditEvents three ways, interleaved per round so drift of a shared machine cancels out:

- plain:        each record its own INSERT transaction into bench_audit_plain (what a request would do
                without the audit writer): the baseline the aim is stated against;
- group:        the same group-commit writer with the chain switched off (batches into bench_audit_plain):
                isolates what the chain itself costs;
- chain:        rzcp.audit.AuditWriter: group commit, head lock, SHA-256 chain, a signed head per batch.

Every path builds the searched columns and the canonical JSON of each record, as the request layer must.
Reported: records/s (median over rounds) and chain/plain and chain/group ratios (median of per-round
ratios). Then the trail is filled to --verify-records records and `verify_chain` is timed over them two
ways, interleaved per round: in one process (`workers=1`, the baseline) and as `rzcp audit verify` runs it
by default (`workers=None`: the seq range cut into stretches walked side by side, one worker process per
CPU); reported are the median records/s of each, their ratio (median of per-round ratios), and this
process's CPU time per record, its worker processes' included (the database server's not): on a machine
others share, wall time moves with their load and CPU time much less. With --skip-append only the verify
part runs. Aims: the chain costs < 30% of plain inserts' throughput (ratio >= 0.70); verify > 100,000
records/s.

Everything it creates (the scratch database or file) is removed at the end. Exit 0 done, 1 an error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, Table, func, insert, select

from rzcp.audit import AuditWriter, build_event, verify_chain
from rzcp.audit.chain import (
    ChainSigner,
    batch_message,
    canonical,
    checkpoint_message,
    column_values,
    record_hash,
    utcnow,
)
from rzcp.audit.events import index_columns
from rzcp.audit.tables import audit_checkpoints, audit_events
from rzcp.audit.verify import processes
from rzcp.audit.writer import Receipt, _Pending, read_head
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.audit.conftest import make_facts

PG_SERVER = os.environ.get("RZCP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
CONCURRENCY = (1, 8, 64)
CHAIN_AIM = 0.70
VERIFY_AIM = 100_000
SIGNER = ChainSigner.derived("bench")

_plain_md = MetaData()
plain = Table(
    "bench_audit_plain",
    _plain_md,
    Column("pk", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    *(
        Column(c.name, c.type, nullable=c.nullable)
        for c in audit_events.columns
        if c.name not in ("seq", "prev_hash", "hash", "key_id", "signature")
    ),
    Index("bench_plain_recorded", "recorded"),
    Index("bench_plain_patient", "patient", "pk"),
    Index("bench_plain_agent", "agent", "pk"),
    Index("bench_plain_member", "member_ura", "pk"),
    Index("bench_plain_client", "client_id", "pk"),
    Index("bench_plain_corr", "correlation_id"),
    Index("bench_plain_purpose", "purpose", "pk"),
    Index("bench_plain_outcome", "outcome", "pk"),
    Index("bench_plain_emergency", "emergency", "pk"),
    Index("bench_plain_type", "type_code", "subtype", "pk"),
)


def plain_row(event: dict[str, Any]) -> dict[str, Any]:
    row = index_columns(event)
    row["content"] = canonical(event).decode()
    return row


class UnchainedWriter(AuditWriter):
    """The same group commit, without the chain: batches into the plain table, no head, no hash."""

    async def _commit(self, batch: list[_Pending]) -> list[Receipt]:
        rows = [{**item.row, "content": item.content.decode()} for item in batch]
        async with self.db.write() as conn:
            await conn.execute(insert(plain), rows)
        self.batches += 1
        self.records += len(rows)
        return [Receipt(0, "", r["event_id"]) for r in rows]


class Templates:
    """Realistic records, fast: a few hundred built ones, copied with a new id and correlation id."""

    def __init__(self) -> None:
        self.events = [build_event(make_facts(patient=f"Patient/p{i}")) for i in range(200)]
        self.n = 0

    def next(self) -> dict[str, Any]:
        self.n += 1
        event = dict(self.events[self.n % len(self.events)])
        event["id"] = uuid.uuid4().hex
        entities = list(event["entity"])
        entities[-1] = {**entities[-1], "what": {"identifier": {"value": f"bench-{self.n}"}}}
        event["entity"] = entities
        return event


async def run_tasks(concurrency: int, total: int, one: Callable[[dict[str, Any]], Awaitable[Any]]) -> float:
    templates = Templates()
    events = [templates.next() for _ in range(total)]
    share = [events[i::concurrency] for i in range(concurrency)]

    async def worker(mine: list[dict[str, Any]]) -> None:
        for event in mine:
            await one(event)

    start = time.perf_counter()
    await asyncio.gather(*(worker(m) for m in share))
    return total / (time.perf_counter() - start)


async def measure(db: Database, concurrency: int, records: int, rounds: int) -> dict[str, Any]:
    result: dict[str, list[float]] = {"plain": [], "group": [], "chain": []}

    async def plain_one(event: dict[str, Any]) -> None:
        row = plain_row(event)
        async with db.write() as conn:
            await conn.execute(insert(plain), row)

    for _ in range(rounds):
        result["plain"].append(await run_tasks(concurrency, records, plain_one))
        group = UnchainedWriter(db, SIGNER)
        result["group"].append(await run_tasks(concurrency, records, group.append))
        await group.aclose()
        chain = AuditWriter(db, SIGNER)
        result["chain"].append(await run_tasks(concurrency, records, chain.append))
        await chain.aclose()
    return {
        "plain": statistics.median(result["plain"]),
        "group": statistics.median(result["group"]),
        "chain": statistics.median(result["chain"]),
        "chain/plain": statistics.median(
            c / p for c, p in zip(result["chain"], result["plain"], strict=True)
        ),
        "chain/group": statistics.median(
            c / g for c, g in zip(result["chain"], result["group"], strict=True)
        ),
    }


async def fill(db: Database, records: int) -> float:
    """Append `records` quickly for the verify run: the writer's chain, built in a tight loop, big batches."""
    templates = Templates()
    base = datetime(2026, 1, 1)
    async with db.read() as conn:
        seq, prev = await read_head(conn)
    start = time.perf_counter()
    done = 0
    while done < records:
        rows = []
        for _ in range(min(5000, records - done)):
            event = templates.next()
            moment = base + timedelta(milliseconds=seq)
            event["recorded"] = moment.isoformat(timespec="milliseconds") + "Z"
            row = index_columns(event)
            content = canonical(event)
            seq += 1
            digest = record_hash(seq, prev, column_values(row), content)
            row.update(
                seq=seq, prev_hash=prev, hash=digest, content=content.decode(), key_id=None, signature=None
            )
            rows.append(row)
            prev = digest
        signature = SIGNER.sign(batch_message(seq, prev))
        rows[-1].update(key_id=signature.key_id, signature=signature.value)
        async with db.write() as conn:
            await conn.execute(insert(audit_events), rows)
            if (done // 5000) % 2 == 0:  # a checkpoint every 10,000 records
                at = utcnow()
                cp = SIGNER.sign(checkpoint_message(seq, prev, at))
                await conn.execute(
                    insert(audit_checkpoints).values(
                        seq=seq, hash=prev, signed_at=at, key_id=cp.key_id, signature=cp.value
                    )
                )
        done += len(rows)
    return records / (time.perf_counter() - start)


def _cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for (the verify workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def _time_verify(db: Database, workers: int | None) -> tuple[float, float, int]:
    """(records/s, CPU µs per record, records) of one verify_chain run, which must find the trail intact."""
    wall, cpu = time.perf_counter(), _cpu()
    result = await verify_chain(db, SIGNER, workers=workers)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    if not result.ok:
        raise RuntimeError(result.line())
    return result.records / wall, cpu / result.records * 1e6, result.records


async def measure_verify(db: Database, rounds: int) -> dict[str, Any]:
    one: list[tuple[float, float, int]] = []
    default: list[tuple[float, float, int]] = []
    for _ in range(rounds):
        one.append(await _time_verify(db, 1))
        default.append(await _time_verify(db, None))
    records = one[0][2]
    return {
        "records": records,
        "workers": processes(records, None),
        "one": statistics.median(r[0] for r in one),
        "one_cpu": statistics.median(r[1] for r in one),
        "default": statistics.median(r[0] for r in default),
        "default_cpu": statistics.median(r[1] for r in default),
        "ratio": statistics.median(d[0] / o[0] for d, o in zip(default, one, strict=True)),
    }


async def bench_db(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    cleanup: Callable[[], Awaitable[None]]
    if kind == "sqlite":
        workdir = tempfile.mkdtemp(prefix="rzcp-bench-audit-")
        url = f"sqlite+aiosqlite:///{workdir}/audit.db"

        async def cleanup() -> None:
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)
    else:
        name = f"rzcp_bench_audit_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = f"{PG_SERVER.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"

        async def cleanup() -> None:
            conn = await asyncpg.connect(f"{PG_SERVER}/postgres")
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()

    db = Database(url)
    report: dict[str, Any] = {"db": kind, "append": {}}
    try:
        await upgrade(db)
        async with db.write() as conn:
            await conn.run_sync(_plain_md.create_all)
        for concurrency in () if args.skip_append else CONCURRENCY:
            report["append"][concurrency] = await measure(db, concurrency, args.records, args.rounds)
            row = report["append"][concurrency]
            print(
                f"{kind:10} {concurrency:3} writers: plain {row['plain']:8.0f}/s  "
                f"group {row['group']:8.0f}/s  chain {row['chain']:8.0f}/s  "
                f"chain/plain {row['chain/plain']:.2f}  chain/group {row['chain/group']:.2f}",
                flush=True,
            )
        # verify speed over a big trail (the records above are part of it)
        async with db.read() as conn:
            have = (await conn.execute(select(func.count()).select_from(audit_events))).scalar_one()
        missing = max(args.verify_records - have, 0)
        report["fill_rate"] = await fill(db, missing) if missing else None
        report["verify"] = await measure_verify(db, args.verify_rounds)
        row = report["verify"]
        print(
            f"{kind:10} verify {row['records']:,} records: one process {row['one']:,.0f}/s "
            f"({row['one_cpu']:.1f} µs CPU/record), default {row['default']:,.0f}/s "
            f"({row['default_cpu']:.1f} µs CPU/record, {row['workers']} processes), "
            f"ratio {row['ratio']:.2f} (filled at {report['fill_rate'] or 0:,.0f}/s)",
            flush=True,
        )
    finally:
        await db.dispose()
        await cleanup()
    return report


def summary(reports: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    if any(report["append"] for report in reports):
        lines += [
            "| database | writers | plain inserts/s | group commit, no chain/s | chain/s | chain/plain "
            "| chain/group |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for report in reports:
            for concurrency, row in report["append"].items():
                lines.append(
                    f"| {report['db']} | {concurrency} | {row['plain']:,.0f} | {row['group']:,.0f} | "
                    f"{row['chain']:,.0f} | {row['chain/plain']:.2f} | {row['chain/group']:.2f} |"
                )
        lines.append("")
    lines.append(
        "| database | verify: records | one process/s | CPU µs/record | default/s | CPU µs/record "
        "| processes | default/one |"
    )
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for report in reports:
        v = report["verify"]
        lines.append(
            f"| {report['db']} | {v['records']:,} | {v['one']:,.0f} | {v['one_cpu']:.1f} | "
            f"{v['default']:,.0f} | {v['default_cpu']:.1f} | {v['workers']} | {v['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--records", type=int, default=3000, help="records per concurrency level and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--verify-rounds", type=int, default=3)
    parser.add_argument("--skip-append", action="store_true", help="only the verify part")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]

    async def run() -> list[dict[str, Any]]:
        return [await bench_db(kind, args) for kind in kinds]

    try:
        reports = asyncio.run(run())
    except Exception as exc:
        print(f"bench_audit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print()
    print(summary(reports))
    slowest = min(r["verify"]["default"] for r in reports)
    print()
    if not args.skip_append:
        worst = min(row["chain/plain"] for r in reports for row in r["append"].values())
        chain_ok = "met" if worst >= CHAIN_AIM else "NOT met"
        print(f"aim chain/plain >= {CHAIN_AIM}: {chain_ok} (worst {worst:.2f})")
    verify_ok = "met" if slowest > VERIFY_AIM else "NOT met"
    print(
        f"aim verify > {VERIFY_AIM:,}/s: {verify_ok} (slowest {slowest:,.0f}/s, as `rzcp audit verify` runs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
