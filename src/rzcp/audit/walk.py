"""Walking one stretch of the hash chain: read its raw rows by seq and check each against the one before.

A stretch is checked on its own, starting from its first row's stored seq and prev_hash; whoever walks the
stretches (`rzcp.audit.verify`) links each one's first row to the end of the one before it, so that the
stretches can be walked one after another in this process or side by side in worker processes, with the
same verdict and the same first bad record named.

Reading, not hashing, is the slower half of verifying (SHA-256 of a 4 kB record costs a few microseconds),
so rows come straight from the driver with no per-row conversion, and `content` as bytes: it is the hashed
bytes as stored (rzcp.audit.chain), so neither the driver nor this module decodes and re-encodes 4 kB of
UTF-8 per record.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from asyncio.subprocess import PIPE
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.audit.chain import record_hash
from rzcp.store.db import Database

CHUNK = 20_000
#: The first read of a stretch is smaller: nothing is hashed while it is read.
FIRST_CHUNK = 2_000

#: What the walker reads, in this order: seq, prev_hash, hash, content (bytes), key_id, signature, then the
#: index columns in their hashed form (rzcp.audit.chain): raw driver values, no conversion in Python.
_WALK = (
    "SELECT seq, prev_hash, hash, {content}, key_id, signature, {recorded}, event_id, type_code, subtype, "
    "action, outcome, patient, agent, member_ura, client_id, purpose, {emergency}, correlation_id "
    "FROM audit_events WHERE seq >= {first} ORDER BY seq LIMIT {limit}"
)
#: SQLite stores the text as UTF-8 (the database's encoding); the cast hands over those bytes unchanged.
SQLITE_WALK = _WALK.format(
    content="CAST(content AS BLOB)",
    recorded="recorded",
    emergency="emergency",
    first="?",
    limit="?",
)
_PG = {
    "content": "convert_to(content, 'UTF8')",
    "recorded": "to_char(recorded, 'YYYY-MM-DD HH24:MI:SS.US')",
    "emergency": "emergency::int",
}
ASYNCPG_WALK = _WALK.format(**_PG, first="$1", limit="$2")
PG_WALK = _WALK.format(**_PG, first=":first", limit=":limit")

_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]+")


async def _fetch(
    conn: AsyncConnection, db: Database, first: int, last: int, limit: int
) -> Sequence[Sequence[Any]]:
    """Up to `limit` records with first <= seq <= last, in seq order.

    The upper bound is not in the query: without fresh statistics (after a bulk load) PostgreSQL plans
    `seq BETWEEN` as a bitmap scan and a sort of the whole range, where `seq >= first ORDER BY seq LIMIT n`
    stays an index scan. The limit keeps it within `last` unless seqs are missing; those rows are dropped."""
    limit = min(limit, last - first + 1)
    rows: Sequence[Sequence[Any]]
    driver = conn.dialect.driver
    if driver in ("aiosqlite", "asyncpg"):  # straight from the driver: no result processing per row
        raw = (await conn.get_raw_connection()).driver_connection
        if driver == "aiosqlite":
            rows = list(await raw.execute_fetchall(SQLITE_WALK, (first, limit)))  # type: ignore[union-attr]
        else:
            rows = await raw.fetch(ASYNCPG_WALK, first, limit)  # type: ignore[union-attr]
    elif db.is_sqlite:
        rows = (await conn.exec_driver_sql(SQLITE_WALK, (first, limit))).all()
    else:
        rows = (await conn.execute(text(PG_WALK), {"first": first, "limit": limit})).all()
    if rows and rows[-1][0] > last:
        rows = rows[: bisect_right(rows, last, key=itemgetter(0))]
    return rows


class ChainWalker:
    """Checks records fed in seq order against the chain; remembers the first failure and stops there."""

    def __init__(self, start_seq: int, prev_hash: str) -> None:
        self.expected = start_seq
        self.prev = prev_hash
        self.count = 0
        self.bad_seq: int | None = None
        self.reason: str | None = None
        #: hash of each record in the current chunk, by seq - chunk_start (to check checkpoints).
        self.chunk_start = start_seq
        self.chunk_hashes: list[str] = []
        #: (seq, hash, key_id, signature) of the newest record that carries a batch signature.
        self.last_signed: tuple[int, str, str, str] | None = None
        #: computed hashes at the checkpoints' seqs, from the stretches joined (see `join`).
        self.marks: dict[int, str] = {}

    @property
    def failed(self) -> bool:
        return self.bad_seq is not None

    def fail(self, seq: int, reason: str) -> None:
        if self.bad_seq is None or seq < self.bad_seq:
            self.bad_seq, self.reason = seq, reason

    def link(self, seq: int, prev_hash: str) -> bool:
        """Whether a record at `seq` with this prev_hash follows the last one fed; records why not."""
        expected = self.expected
        if seq < expected:
            self.fail(seq, f"appears twice or out of order (expected seq {expected})")
        elif seq > expected:
            self.fail(expected, f"is missing (the chain jumps from seq {expected - 1} to {seq})")
        elif prev_hash != self.prev:
            self.fail(seq, "its prev_hash does not link to the record before it (moved or replaced)")
        else:
            return True
        return False

    def join(self, stretch: Stretch) -> bool:
        """Continue with a stretch walked on its own: link its first record to the last one here, then
        take over its state; False once the chain is broken (here or inside the stretch)."""
        if stretch.first_seq is None:  # no records in that seq range: the next stretch must link here
            return True
        if not self.link(stretch.first_seq, stretch.first_prev or ""):
            return False
        self.count += stretch.count
        self.marks.update(stretch.marks)  # also of a stretch broken further on: its records before that
        self.expected, self.prev = stretch.end, stretch.head
        if stretch.last_signed is not None:
            self.last_signed = stretch.last_signed
        if stretch.bad_seq is not None:
            self.fail(stretch.bad_seq, stretch.reason or "")
            return False
        return True

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of (seq, prev_hash, hash, content as bytes, key_id, signature, *INDEX_COLUMNS)."""
        expected, prev = self.expected, self.prev
        last_signed = self.last_signed
        self.chunk_start = expected
        hashes: list[str] = []
        append = hashes.append
        for row in rows:
            seq = row[0]
            if seq != expected or row[1] != prev:
                self.expected, self.prev = expected, prev
                self.link(seq, row[1])
                break
            digest = record_hash(seq, prev, row[6:], row[3])
            if digest != row[2]:
                self.fail(seq, "its hash does not match its content (the record was changed)")
                break
            if row[5] is not None:
                last_signed = (seq, digest, row[4], row[5])
            append(digest)
            prev = digest
            expected += 1
        self.count += len(hashes)
        self.expected, self.prev = expected, prev
        self.last_signed = last_signed
        self.chunk_hashes = hashes

    def hash_at(self, seq: int) -> str | None:
        index = seq - self.chunk_start
        if 0 <= index < len(self.chunk_hashes):
            return self.chunk_hashes[index]
        return None


@dataclass
class Stretch:
    """What walking the records lo <= seq <= hi found: enough to link it to its neighbours."""

    #: seq and stored prev_hash of its first record; None when it holds no record.
    first_seq: int | None = None
    first_prev: str | None = None
    #: records that verified before the first failure in it, and the seq after the last of them.
    count: int = 0
    end: int = 0
    #: hash of the last verified record (the prev_hash the next stretch must start with).
    head: str = ""
    bad_seq: int | None = None
    reason: str | None = None
    last_signed: tuple[int, str, str, str] | None = None
    #: computed hash at each asked-for seq (the checkpoints) among the records that verified.
    marks: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Stretch:
        fields = orjson.loads(data)
        fields["marks"] = {int(seq): digest for seq, digest in fields["marks"].items()}
        if fields["last_signed"] is not None:
            fields["last_signed"] = tuple(fields["last_signed"])
        return cls(**fields)


async def walk_stretch(
    conn: AsyncConnection, db: Database, lo: int, hi: int, marks: Sequence[int], chunk: int = CHUNK
) -> Stretch:
    """Walk lo <= seq <= hi; `marks` (sorted) are the seqs whose computed hash the caller needs."""
    stretch = Stretch()
    rows = await _fetch(conn, db, lo, hi, min(chunk, FIRST_CHUNK))  # the pipeline below starts sooner
    if not rows:
        return stretch
    stretch.first_seq, stretch.first_prev = rows[0][0], rows[0][1]
    walker = ChainWalker(rows[0][0], rows[0][1])
    while rows and not walker.failed:
        last = rows[-1][0]
        # hash this chunk in a thread while the next one is read (hashlib lets go of the GIL)
        ahead = asyncio.ensure_future(_fetch(conn, db, last + 1, hi, chunk)) if last < hi else None
        await asyncio.to_thread(walker.feed, rows)
        for seq in marks[bisect_left(marks, rows[0][0]) : bisect_right(marks, last)]:
            digest = walker.hash_at(seq)
            if digest is not None:
                stretch.marks[seq] = digest
        rows = await ahead if ahead is not None else []
    stretch.count, stretch.end, stretch.head = walker.count, walker.expected, walker.prev
    stretch.bad_seq, stretch.reason = walker.bad_seq, walker.reason
    stretch.last_signed = walker.last_signed
    return stretch


async def begin_snapshot(conn: AsyncConnection, db: Database, snapshot: str | None = None) -> None:
    """One read-only snapshot for the whole walk; on PostgreSQL optionally one exported by another session."""
    if db.is_sqlite:
        return
    await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
    if snapshot is not None:
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        await conn.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))


#: What a worker process runs; its work comes on stdin, not the command line (the URL may hold a password).
_WORKER = "from rzcp.audit.walk import worker_main; worker_main()"


class WalkerProcess:
    """A worker process that walks stretches it is given, one at a time, on its own connection in one
    snapshot: the one exported by the caller's transaction on PostgreSQL.

    A plain child process rather than multiprocessing, which would import the caller's main module again
    in the worker (all of `rzcp`'s CLI, or a script without a `__main__` guard) where this one imports
    only what walking needs. SQLite has no snapshot to share: the caller bounds every stretch by the
    newest seq it sees, and the records up to there cannot change (append-only by trigger)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._errors = asyncio.ensure_future(process.stderr.read()) if process.stderr else None

    @classmethod
    async def start(cls, url: str, snapshot: str | None) -> WalkerProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env
        )
        walker = cls(process)
        await walker._send({"url": url, "snapshot": snapshot})
        return walker

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(orjson.dumps(message) + b"\n")
        await self._process.stdin.drain()

    async def walk(self, lo: int, hi: int, marks: Sequence[int], chunk: int) -> Stretch:
        assert self._process.stdout is not None
        await self._send({"lo": lo, "hi": hi, "marks": list(marks), "chunk": chunk})
        line = await self._process.stdout.readline()
        if not line:
            await self._process.wait()
            raise RuntimeError(f"a verify worker failed: {await self._last_error()}")
        return Stretch.from_json(line)

    async def _last_error(self) -> str:
        text = (await self._errors).decode(errors="replace").strip() if self._errors else ""
        return text.splitlines()[-1] if text else f"exit {self._process.returncode}"

    async def close(self) -> None:
        """Let it finish (end of its input) or, on an error or cancellation here, stop it."""
        if self._process.returncode is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()
                await asyncio.wait_for(self._process.wait(), 10)
            finally:
                if self._process.returncode is None:
                    self._process.kill()
                    await self._process.wait()
        if self._errors is not None:
            await self._errors


def worker_main() -> None:
    """The worker process: the database on the first line of stdin, then one stretch a line, each
    answered with its Stretch as a line of JSON on stdout; ends with its input."""
    database = orjson.loads(sys.stdin.buffer.readline())

    async def run() -> None:
        db = Database(database["url"], pool_size=1)
        try:
            async with db.read() as conn:
                await begin_snapshot(conn, db, database["snapshot"])
                for line in sys.stdin.buffer:  # blocking: nothing else runs here meanwhile
                    job = orjson.loads(line)
                    stretch = await walk_stretch(conn, db, job["lo"], job["hi"], job["marks"], job["chunk"])
                    sys.stdout.buffer.write(stretch.to_json() + b"\n")
                    sys.stdout.buffer.flush()
        finally:
            await db.dispose()

    asyncio.run(run())
