"""The consent engine's benchmark: decisions per second from the compiled form, each as a ratio to a plain
dict lookup measured in the same run, and the cost of the cross-process invalidation check.

    python bench/bench_consent.py [--rounds N] [--registry-consents N] [--db sqlite|postgresql|both|none]

1. One patient with 1, 10 and 100 consents: decisions per second over a fixed mix of requests (different
   requesters, sources, purposes, resource types, labels; exact per-resource questions).
2. A registry of N consents (default 1,000,000) over N/10 patients, against one of 1,000 over 100: each
   decision looks the patient up in the in-memory registry and decides; patients are visited in a random
   order. Reported: decisions per second at both sizes and the slowdown of the large one.
   Beside it, two floors at the same sizes: a patient's dict entry and one 40-byte record (what any
   per-patient decision must read), and a packed form of a patient's rules (one bytes record per patient,
   a decision reading its key index and unpacking its candidate consents): what no representation avoids,
   and what a packed one would still cost.
3. The change-counter read (`rules_for` when nothing changed) on SQLite and PostgreSQL: microseconds per
   check inside an open transaction and with the transaction's own begin/commit, against the dict lookup.

Engine figures are CPU time of this process (the machines are shared: wall time would measure the
neighbours), the database figures wall time. Figures are medians over the rounds; each ratio is timed
back to back with its baseline, so drift of a
shared machine cancels out. The scratch databases are removed at the end. Exit 0 whether or not the aims
(over 50,000 decisions/s; at most 10% slower at a million consents) are met, 1 on an error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rzcp.consent.cache import ConsentCache, note_consent_change, rules_for
from rzcp.consent.cases import consent_from_compact
from rzcp.consent.compiled import CompiledConsents, compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.model import Request
from rzcp.consent.policy import Policy, load_policy

PG_SERVER = os.environ.get("RZCP_BENCH_PG_SERVER", "postgresql+asyncpg://postgres@127.0.0.1:5432")
DECISION_AIM = 50_000
GROWTH_AIM = 0.10

CATEGORIES = ["huisartsen", "ziekenhuizen-labs", "apotheken", "ggz", "verpleging-verzorging", "overige"]
DATA = [
    "medicatie",
    "labuitslagen",
    "allergieen",
    "problemen",
    "vitale-functies",
    "vaccinaties",
    "documenten",
]
PURPOSES = ["TREAT", "COC", "PATRQT"]
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITAL = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
PSY = "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"
RESOURCES = [
    ("MedicationRequest", frozenset()),
    ("MedicationDispense", frozenset()),
    ("Observation", frozenset({LAB})),
    ("Observation", frozenset({VITAL})),
    ("Condition", frozenset()),
    ("AllergyIntolerance", frozenset()),
    ("Encounter", frozenset()),
]
MOMENT = datetime(2025, 6, 1, 10)


def members(count: int = 200) -> list[tuple[str, str]]:
    return [(f"{10_000_000 + i:08d}", CATEGORIES[i % len(CATEGORIES)]) for i in range(count)]


MEMBERS = members()


def random_consent(rng: random.Random, index: int, policy: Policy) -> dict[str, Any]:
    """A consent as patients write them: mostly permissions for a category or one member, some refusals,
    some limited to data, a purpose, a period, or with an exception."""
    effect = "deny" if rng.random() < 0.25 else "permit"
    provision: dict[str, Any] = {}
    roll = rng.random()
    if roll < 0.45:
        provision["to"] = rng.choice(CATEGORIES)
    elif roll < 0.9:
        provision["to"] = f"ura:{rng.choice(MEMBERS)[0]}"
    if rng.random() < 0.2:
        provision["from"] = rng.choice(CATEGORIES)
    if rng.random() < 0.6:
        provision["data"] = rng.sample(DATA, rng.randint(1, 2))
    if rng.random() < 0.3:
        provision["purpose"] = [rng.choice(PURPOSES)]
    if rng.random() < 0.3:
        start = datetime(2024, 1, 1) + timedelta(days=rng.randint(0, 700))
        provision["period"] = f"{start.date()} / {(start + timedelta(days=rng.randint(30, 700))).date()}"
    if rng.random() < 0.1:
        provision["labels"] = ["PSY"]
    if rng.random() < 0.15:
        inner = "deny" if effect == "permit" else "permit"
        provision["except"] = [{inner: {"data": [rng.choice(DATA)]}}]
    return consent_from_compact({"id": f"c{index}", effect: provision}, policy, patient="Patient/bench")


BY_CATEGORY = {c: [m for m in MEMBERS if m[1] == c] for c in CATEGORIES}


def targeted(rng: random.Random, compiled: CompiledConsents) -> tuple[str, str]:
    """Half the time a member the patient's consents name (itself or through its category): most
    requests in a region come from the patient's own care providers, not from random members."""
    keys = compiled.by_requester
    named = [m for m in MEMBERS if m[0] in keys]
    named += [m for c in keys for m in BY_CATEGORY.get(c, [])[:3]]
    if named and rng.random() < 0.5:
        return rng.choice(named)
    return rng.choice(MEMBERS)


def random_requests(
    rng: random.Random, count: int, compiled: CompiledConsents | None = None
) -> list[Request]:
    out = []
    for _ in range(count):
        requester, category = targeted(rng, compiled) if compiled is not None else rng.choice(MEMBERS)
        source, source_category = rng.choice(MEMBERS)
        resource_type, codes = rng.choice(RESOURCES)
        out.append(
            Request(
                requester_ura=requester,
                requester_category=category,
                source_ura=source,
                source_category=source_category,
                purpose=rng.choice(PURPOSES),
                moment=MOMENT,
                resource_type=resource_type,
                codes=codes,
                labels=frozenset({PSY}) if rng.random() < 0.05 else frozenset(),
                data_moment=MOMENT - timedelta(days=rng.randint(0, 2000)),
            )
        )
    return out


def per_op(run: Callable[[], int], *, min_seconds: float = 0.3) -> float:
    """CPU seconds of this process per operation of `run` (which returns how many it did): on a shared
    machine CPU time, not wall time, is what "decisions per second per core" means."""
    done, started = 0, time.process_time()
    while True:
        done += run()
        elapsed = time.process_time() - started
        if elapsed >= min_seconds:
            return elapsed / done


def dict_lookup_cost(keys: int = 100_000) -> Callable[[], int]:
    table = {f"Patient/{i}": i for i in range(keys)}
    order = list(table)
    random.Random(1).shuffle(order)

    def run() -> int:
        for key in order:
            table[key]
        return len(order)

    return run


def decisions_for_one(
    compiled: CompiledConsents, policy: Policy, requests: list[Request]
) -> Callable[[], int]:
    def run() -> int:
        for request in requests:
            decide(compiled, policy, request)
        return len(requests)

    return run


def decisions_in_registry(
    registry: dict[str, CompiledConsents], policy: Policy, visits: list[tuple[str, Request]]
) -> Callable[[], int]:
    def run() -> int:
        for patient, request in visits:
            decide(registry[patient], policy, request)
        return len(visits)

    return run


def measure_pair(
    run: Callable[[], int], baseline: Callable[[], int], rounds: int
) -> tuple[float, float, float]:
    """Median seconds per op of `run` and of `baseline`, and the median of their per-round ratios."""
    ours, base, ratios = [], [], []
    for _ in range(rounds):
        b = per_op(baseline)
        o = per_op(run)
        ours.append(o)
        base.append(b)
        ratios.append(o / b)
    return statistics.median(ours), statistics.median(base), statistics.median(ratios)


def small_vs_large(
    small_run: Callable[[], int], large_run: Callable[[], int], rounds: int
) -> tuple[float, float, float]:
    """Median seconds per decision of each registry, and the median of the per-round slowdowns."""
    smalls, larges, growths = [], [], []
    for _ in range(rounds):
        s = per_op(small_run)
        la = per_op(large_run)
        smalls.append(s)
        larges.append(la)
        growths.append(la / s - 1)
    return statistics.median(smalls), statistics.median(larges), statistics.median(growths)


def patient_visits(
    rng: random.Random, registry: dict[str, CompiledConsents], *, per_visit: int = 1, decisions: int = 20_000
) -> list[tuple[str, Request]]:
    """`decisions` questions for patients of the registry, a random patient per visit and `per_visit`
    questions about that patient in a row."""
    keys = list(registry)
    visits: list[tuple[str, Request]] = []
    for _ in range(decisions // per_visit):
        key = rng.choice(keys)
        visits.extend((key, r) for r in random_requests(rng, per_visit, registry[key]))
    return visits


def report_growth(title: str, measured: tuple[float, float, float], registry_consents: int) -> None:
    s, la, growth = measured
    print(f"\n## {title}")
    print(f"{'1,000 consents':>22} {1 / s:>12,.0f} {s * 1e6:>12.2f}")
    print(f"{f'{registry_consents:,} consents':>22} {1 / la:>12,.0f} {la * 1e6:>12.2f}")
    verdict = "within" if growth <= GROWTH_AIM else "OVER"
    print(f"slowdown at {registry_consents:,}: {growth:+.1%} ({verdict} the {GROWTH_AIM:.0%} aim)")


def build_registry(policy: Policy, consents: int, patients: int, seed: int) -> dict[str, CompiledConsents]:
    rng = random.Random(seed)
    registry: dict[str, CompiledConsents] = {}
    per_patient = consents // patients
    index = 0
    for p in range(patients):
        # 1 to 2*average-1 consents per patient, the total kept exact
        count = per_patient if p == patients - 1 else rng.randint(1, 2 * per_patient - 1)
        count = min(count, consents - index - (patients - p - 1))
        resources = [random_consent(rng, index + i, policy) for i in range(max(count, 1))]
        index += len(resources)
        registry[f"Patient/{p}"] = compile_consents(resources)
    return registry


def bench_engine(policy: Policy, rounds: int, registry_consents: int) -> None:
    rng = random.Random(7)
    requests = random_requests(rng, 2_000)
    baseline = dict_lookup_cost()
    print("## decisions for one patient (exact per-resource questions)")
    header = ("consents", "decisions/s", "us/decision", "dict lookup ns", "ratio", "permit %")
    print("{:>9} {:>12} {:>12} {:>15} {:>8} {:>9}".format(*header))
    for count in (1, 10, 100):
        compiled = compile_consents([random_consent(rng, i, policy) for i in range(count)])
        requests = random_requests(rng, 2_000, compiled)
        permitted = sum(decide(compiled, policy, r).permitted for r in requests) / len(requests)
        ours, base, ratio = measure_pair(decisions_for_one(compiled, policy, requests), baseline, rounds)
        flag = "" if 1 / ours >= DECISION_AIM else "  (below the aim)"
        row = f"{count:>9} {1 / ours:>12,.0f} {ours * 1e6:>12.2f} {base * 1e9:>15.1f} {ratio:>8.1f}"
        print(f"{row} {permitted:>8.0%}{flag}")

    patients = registry_consents // 10
    print(f"\n## a registry: {registry_consents:,} consents over {patients:,} patients vs 1,000 over 100")
    small = build_registry(policy, 1_000, 100, seed=11)
    started = time.perf_counter()
    gc.disable()
    try:
        large = build_registry(policy, registry_consents, registry_consents // 10, seed=11)
    finally:
        gc.enable()
    gc.freeze()
    built = time.perf_counter() - started
    print(f"(built and compiled in {built:.0f} s: {built / registry_consents * 1e6:.0f} us per consent)")
    visits_rng = random.Random(3)
    small_visits, large_visits = patient_visits(visits_rng, small), patient_visits(visits_rng, large)
    small_run = decisions_in_registry(small, policy, small_visits)
    large_run = decisions_in_registry(large, policy, large_visits)
    share = sum(decide(large[p], policy, r).permitted for p, r in large_visits) / len(large_visits)
    print(f"(permitted: {share:.0%} of the large registry's visits)")
    s, la, growth = small_vs_large(small_run, large_run, rounds)
    ours, base, ratio = measure_pair(large_run, baseline, rounds)
    print(f"{'registry':>22} {'decisions/s':>12} {'us/decision':>12}")
    print(f"{'1,000 consents':>22} {1 / s:>12,.0f} {s * 1e6:>12.2f}")
    print(f"{f'{registry_consents:,} consents':>22} {1 / la:>12,.0f} {la * 1e6:>12.2f}")
    verdict = "within" if growth <= GROWTH_AIM else "OVER"
    print(
        f"slowdown at {registry_consents:,}: {growth:+.1%} ({verdict} the {GROWTH_AIM:.0%} aim); "
        f"ratio to a dict lookup at that size: {ratio:.1f}x ({base * 1e9:.0f} ns per lookup)"
    )
    bench_access_patterns(policy, small, large, rounds, registry_consents)
    bench_memory_floor(rounds, patients, extra_ns=(la - s) * 1e9)
    bench_packed_floor(rounds, patients)
    del large
    gc.unfreeze()


#: Decisions one federated pull takes for its patient: one per source (3 members) and one per returned
#: resource (the 13 Conditions of the Synthea patient from one of them).
PULL_DECISIONS = 16


def bench_access_patterns(
    policy: Policy,
    small: dict[str, CompiledConsents],
    large: dict[str, CompiledConsents],
    rounds: int,
    registry_consents: int,
) -> None:
    """The same registries visited two more ways. As a pull meets them: a random patient per pull, then
    the pull's decisions for that patient (the per-decision figure above is the worst case, a patient no
    decision touched before every time). And the size apart from the memory it takes: 100 patients of
    the large registry against the small registry's 100, both then in the CPU caches, so what remains is
    what the size itself costs a decision (a larger dict of patients; nothing else grows)."""
    rng = random.Random(5)
    measured = small_vs_large(
        decisions_in_registry(small, policy, patient_visits(rng, small, per_visit=PULL_DECISIONS)),
        decisions_in_registry(large, policy, patient_visits(rng, large, per_visit=PULL_DECISIONS)),
        rounds,
    )
    title = f"the same registries, {PULL_DECISIONS} decisions per patient visit (one pull's worth)"
    report_growth(title, measured, registry_consents)
    some = dict(rng.sample(sorted(large.items()), len(small)))
    measured = small_vs_large(
        decisions_in_registry(small, policy, patient_visits(rng, small)),
        decisions_in_registry(large, policy, patient_visits(rng, some)),
        rounds,
    )
    title = "100 patients of each registry, one decision per visit (the size without the cold memory)"
    report_growth(title, measured, registry_consents)


def bench_memory_floor(rounds: int, patients: int, extra_ns: float) -> None:
    """The least any per-patient decision can cost more in a large registry: look the patient up and read
    one 40-byte record of theirs (the smallest packed form a patient's rules could take), for 100 patients
    and for `patients`, visited in a random order as above. What this grows by is memory latency, which
    no representation of the rules avoids; the engine's growth is set beside it."""
    rng = random.Random(9)

    def registry(count: int) -> dict[str, bytes]:
        return {f"Patient/{p}": rng.randbytes(40) for p in range(count)}

    def run_over(table: dict[str, bytes]) -> Callable[[], int]:
        keys = list(table)
        visits = [(rng.choice(keys), rng.randrange(40)) for _ in range(200_000)]

        def run() -> int:
            for key, at in visits:
                table[key][at]
            return len(visits)

        return run

    small_run, large_run = run_over(registry(100)), run_over(registry(patients))
    s, la, growth = small_vs_large(small_run, large_run, rounds)
    print(f"\n## the memory floor: a patient's entry and one 40-byte record, 100 vs {patients:,} patients")
    print(f"{'100 patients':>22} {s * 1e9:>9.0f} ns")
    print(f"{f'{patients:,} patients':>22} {la * 1e9:>9.0f} ns")
    print(
        f"the floor grows by {(la - s) * 1e9:.0f} ns ({growth:+.0%}); one decision per random patient grew "
        f"by {extra_ns:.0f} ns above"
    )


#: A packed consent: effect and flags, nine condition-set ids into shared tables, the period as two integers.
PACKED_CONSENT = struct.Struct("<BB9Hqq")
PACKED_KEYS = 300  # requester keys (member URAs and categories) a region's consents name


def bench_packed_floor(rounds: int, patients: int) -> None:
    """What a packed form of each patient's rules would still cost at this size: one bytes object per
    patient (its consents' requester keys, a candidate mask per key, and a 36-byte record per consent, as
    `PACKED_CONSENT`; 1 to 19 consents, 10 on average), and a "decision" that finds the requester's key
    with `bytes.find`, then unpacks the candidate records and tests one condition set of each: far less
    work than the engine's, with all of a patient's data contiguous. 100 against `patients`, visited in a
    random order. Not the engine: the measure of whether packing could bring a cold patient's decision
    within the aim."""
    rng = random.Random(13)
    sets = [frozenset({f"x{i}", f"y{i % 7}"}) for i in range(2_000)]
    key_bytes = [struct.pack("<I", k) for k in range(PACKED_KEYS)]

    def packed(consents: int) -> bytes:
        keys = sorted(rng.sample(range(PACKED_KEYS), min(consents, 8)))
        head = struct.pack("<HH", len(keys), consents) + b"".join(key_bytes[k] for k in keys)
        masks = b"".join(struct.pack("<I", rng.getrandbits(consents)) for _ in keys)
        records = b"".join(
            PACKED_CONSENT.pack(
                rng.randrange(2),
                0,
                *(rng.randrange(len(sets)) for _ in range(9)),
                *sorted(rng.sample(range(2**40), 2)),
            )
            for _ in range(consents)
        )
        return head + masks + records

    unpack = PACKED_CONSENT.unpack_from

    def decide_packed(record: bytes, key: int, moment: int, probe: str) -> int:
        count = struct.unpack_from("<H", record)[0]
        end = 4 + 4 * count
        at = record.find(key_bytes[key], 4, end)
        while at != -1 and at % 4:
            at = record.find(key_bytes[key], at + 1, end)
        if at == -1:
            return 0
        mask = int.from_bytes(record[end + at - 4 : end + at], "little")
        base, found, i = end + 4 * count, 0, 0
        while mask:
            if mask & 1:
                fields = unpack(record, base + PACKED_CONSENT.size * i)
                if fields[11] <= moment <= fields[12] and probe in sets[fields[2]]:
                    found += fields[0] + 1
            mask >>= 1
            i += 1
        return found

    def run_over(count: int) -> Callable[[], int]:
        table = {f"Patient/{p}": packed(rng.randint(1, 19)) for p in range(count)}
        keys = list(table)
        visits = [
            (
                rng.choice(keys),
                rng.randrange(PACKED_KEYS),
                rng.getrandbits(40),
                f"x{rng.randrange(len(sets))}",
            )
            for _ in range(100_000)
        ]

        def run() -> int:
            for patient, key, moment, probe in visits:
                decide_packed(table[patient], key, moment, probe)
            return len(visits)

        return run

    s, la, growth = small_vs_large(run_over(100), run_over(patients), rounds)
    print(f"\n## a packed form's floor: one bytes record per patient, 100 vs {patients:,} patients")
    print(f"{'100 patients':>22} {s * 1e9:>9.0f} ns")
    print(f"{f'{patients:,} patients':>22} {la * 1e9:>9.0f} ns")
    print(f"a packed record grows by {(la - s) * 1e9:.0f} ns per decision ({growth:+.0%})")


async def bench_counter(url: str, label: str, rounds: int, baseline: Callable[[], int]) -> None:
    from rzcp.store.db import Database
    from rzcp.store.migrate import upgrade

    db = Database(url)
    try:
        await upgrade(db)
        cache = ConsentCache()
        patient = "Patient/bench-counter"
        async with db.write() as conn:
            await note_consent_change(conn, patient)
        async with db.read() as conn:
            await rules_for(conn, cache, patient)

        async def in_transaction(n: int) -> float:
            async with db.read() as conn:
                started = time.perf_counter()
                for _ in range(n):
                    await rules_for(conn, cache, patient)
                return (time.perf_counter() - started) / n

        async def own_transaction(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                async with db.read() as conn:
                    await rules_for(conn, cache, patient)
            return (time.perf_counter() - started) / n

        inside = statistics.median([await in_transaction(2_000) for _ in range(rounds)])
        own = statistics.median([await own_transaction(1_000) for _ in range(rounds)])
        lookup = per_op(baseline)
        print(f"{label:>11} {inside * 1e6:>16.0f} {own * 1e6:>18.0f} {inside / lookup:>14,.0f}x")
        # and what a change costs the next decision: a counter bump, then one recompile
        async with db.write() as conn:
            await note_consent_change(conn, patient)
        async with db.read() as conn:
            started = time.perf_counter()
            await rules_for(conn, cache, patient)
            print(
                f"{'':>11} after a change: {(time.perf_counter() - started) * 1e6:,.0f} us (read + compile)"
            )
    finally:
        await db.dispose()


async def bench_counters(which: str, rounds: int) -> None:
    print("\n## the change-counter check (rules_for when nothing changed)")
    print(f"{'database':>11} {'us in a txn':>16} {'us with own txn':>18} {'vs dict lookup':>15}")
    baseline = dict_lookup_cost()
    if which in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            await bench_counter(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", "SQLite", rounds, baseline)
    if which in ("postgresql", "both"):
        import asyncpg

        name = f"rzcp_bench_consent_{uuid.uuid4().hex[:8]}"
        admin_dsn = PG_SERVER.replace("postgresql+asyncpg", "postgresql") + "/postgres"
        try:
            admin = await asyncpg.connect(admin_dsn, timeout=5)
        except Exception as exc:
            print(f"{'PostgreSQL':>11} skipped: no server at {PG_SERVER} ({type(exc).__name__})")
            return
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            await bench_counter(f"{PG_SERVER}/{name}", "PostgreSQL", rounds, baseline)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--registry-consents", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both", "none"], default="both")
    args = parser.parse_args()
    policy = load_policy()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; medians over {args.rounds} rounds\n")
    try:
        bench_engine(policy, args.rounds, args.registry_consents)
        if args.db != "none":
            asyncio.run(bench_counters(args.db, args.rounds))
    except KeyboardInterrupt:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
