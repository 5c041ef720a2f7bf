"""The store's benchmarks: read by id and typical searches, each as a ratio to a bare FastAPI endpoint.

    python bench/run_store.py [--db sqlite|postgresql|both] [--seconds N] [--rounds N] [--connections N]

For each database this starts the gateway under uvicorn (one worker, httptools, uvloop when installed, no
access log) on a loopback port, loads real resources into it over HTTP (the Synthea transaction Bundles'
entries and the nl-core examples), takes the exact bytes the gateway answers for each benchmarked URL, and
starts a second uvicorn process with a bare FastAPI app answering those URLs with those bytes. `wrk` then
drives both, interleaved (baseline, gateway, baseline, gateway ...): throughput at --connections
connections, and the median latency at one connection. Reported are medians over the rounds and, as the
ratio, the median of the per-round gateway/baseline ratios (each pair measured back to back, so drift of a
shared machine cancels out).

Everything it starts (servers, the scratch database) is stopped or removed at the end, also on Ctrl-C.
Exit codes: 0 done (whether or not the aim is met), 1 an error, 2 a missing tool (wrk, psql).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # the sibling module, found through the line above
from harness import Server, Servers, WrkRun, free_port

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("RZCP_BENCH_DATA", "/work/shared/data"))
PG_DSN = os.environ.get("RZCP_BENCH_PG", "postgres@127.0.0.1:5432")
PG_DB = "rzcp_bench"
READ_AIM = 0.50
FHIR_JSON = "application/fhir+json"
SMOKING_STATUS = "http://loinc.org|72166-2"  # on 133 of the Synthea Observations
#: The request context a member sends with every request (sent to the baseline too, which ignores it).
CONTEXT_HEADERS = {
    "X-Purpose-Of-Use": "TREAT",
    "X-Acting-Practitioner": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900000001",
}
OWN_OBSERVATIONS = 12  # Observations of our own referring to Patient/<real id>, for the patient search


class MissingTool(Exception):
    pass


# --- processes --------------------------------------------------------------------------------------


def start_uvicorn(servers: Servers, name: str, factory: str, env: dict[str, str], ready_path: str) -> Server:
    """One uvicorn worker serving `factory` from the bench directory, with its fastest loop and parser."""
    port = free_port()
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    command = [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
        "--http", http, "--loop", loop, "--log-level", "warning",
    ]  # fmt: skip
    return servers.start(name, command, port=port, ready=ready_path, env=env)


# --- databases ----------------------------------------------------------------------------------------


def psql(sql: str) -> None:
    user, _, hostport = PG_DSN.partition("@")
    host, _, port = hostport.partition(":")
    subprocess.run(
        ["psql", "-h", host, "-p", port or "5432", "-U", user, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
         "-qAtc", sql],
        check=True,
        timeout=60,
        capture_output=True,
    )  # fmt: skip


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database for one run, removed afterwards; yields its SQLAlchemy URL."""
    if kind == "sqlite":
        path = workdir / "rzcp_bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if shutil.which("psql") is None:
        raise MissingTool("psql not found: install it with `apt-get install -y postgresql-client`")
    psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {PG_DB}")
    try:
        yield f"postgresql+asyncpg://{PG_DSN}/{PG_DB}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


# --- data -----------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    created: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    synthea_observations: list[dict[str, Any]] = field(default_factory=list)
    first_refusal: str = ""


def post(client: httpx.Client, resource: dict[str, Any], loaded: Loaded) -> str | None:
    res_type = resource["resourceType"]
    response = client.post(f"/fhir/{res_type}", json=resource, headers={"Content-Type": FHIR_JSON})
    if response.status_code != 201:
        loaded.refused[res_type] = loaded.refused.get(res_type, 0) + 1
        if not loaded.first_refusal:
            loaded.first_refusal = f"{res_type}: {response.status_code} {response.text[:300]}"
        return None
    res_id = response.json()["id"]
    loaded.created += 1
    loaded.ids.setdefault(res_type, []).append(res_id)
    return res_id


def load_data(client: httpx.Client) -> Loaded:
    loaded = Loaded()
    for path in sorted((DATA_DIR / "synthea").glob("*.json")):
        bundle = json.loads(path.read_text())
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            post(client, resource, loaded)
            if resource["resourceType"] == "Observation":
                loaded.synthea_observations.append(resource)
    for path in sorted((DATA_DIR / "nl-core").glob("*.json")):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") != "Bundle":
            post(client, resource, loaded)
    return loaded


def add_own_observations(client: httpx.Client, loaded: Loaded, patient_id: str) -> None:
    """Synthea Observations copied, `subject` set to `Patient/<real id>` (the loaded ones use urn:uuid)."""
    for original in loaded.synthea_observations[:OWN_OBSERVATIONS]:
        resource = copy.deepcopy(original)
        resource.pop("id", None)
        resource.pop("encounter", None)
        resource["subject"] = {"reference": f"Patient/{patient_id}"}
        if post(client, resource, loaded) is None:
            raise RuntimeError("the gateway refused an Observation of our own; see its log")


# --- wrk ------------------------------------------------------------------------------------------------


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    cpu_of: Server | None = None,
) -> WrkRun:
    """harness.wrk with the member's context headers (`headers` besides them: bench_auth.py's bearer
    token), strict: a run with failed requests would measure the failures."""
    return harness.wrk(
        url,
        connections=connections,
        seconds=seconds,
        headers={**CONTEXT_HEADERS, **(headers or {})},
        cpu_of=cpu_of,
        strict=True,
    )


# --- the benchmarks -------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Interleaved:
    """Req/s and p50 of a reference server (base) and the gateway judged against it, measured back to back
    in each round (bench_auth.py: the gateway without authentication and with it)."""

    base_rps: list[float] = field(default_factory=list)
    gate_rps: list[float] = field(default_factory=list)
    base_p50: list[float] = field(default_factory=list)
    gate_p50: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios: drift of a shared machine hits both sides of a round alike."""
        return statistics.median(g / b for g, b in zip(self.gate_rps, self.base_rps, strict=True))


@dataclass
class Bench(Interleaved):
    name: str
    path: str  # path and query, the same against both servers
    note: str
    is_read: bool = False
    #: --audit-variant: the gateway without its audit middleware, measured right after the gateway.
    free_rps: list[float] = field(default_factory=list)
    #: --audit-variant: CPU µs per request of the gateway's and the unaudited gateway's process.
    gate_cpu: list[float] = field(default_factory=list)
    free_cpu: list[float] = field(default_factory=list)

    @property
    def baseline_path(self) -> str:
        """The baseline's static route for this benchmark (two searches share the gateway's path)."""
        return f"/bench/{self.name.replace(' ', '-')}"


def prepare(gateway: Server, workdir: Path) -> list[Bench]:
    with httpx.Client(base_url=gateway.base, timeout=60, headers=CONTEXT_HEADERS) as client:
        started = time.monotonic()
        loaded = load_data(client)
        took = time.monotonic() - started
        refused = ", ".join(f"{t} {n}" for t, n in sorted(loaded.refused.items())) or "none"
        print(f"  loaded {loaded.created} resources over HTTP in {took:.1f} s (refused: {refused})")
        if loaded.first_refusal:
            print(f"  first refusal: {loaded.first_refusal}")
        patient_id = loaded.ids["Patient"][0]  # the first Synthea patient
        add_own_observations(client, loaded, patient_id)
        benches = [
            Bench("read", f"/fhir/Patient/{patient_id}", "Synthea Patient", is_read=True),
            Bench(
                "search code",
                f"/fhir/Observation?code={SMOKING_STATUS}&_count=10",
                "Observation?code=loinc|72166-2",
            ),
            Bench(
                "search patient",
                f"/fhir/Observation?patient=Patient/{patient_id}&_count=10",
                f"Observation?patient=<id> ({OWN_OBSERVATIONS} own)",
            ),
        ]
        manifest: dict[str, str] = {}
        for i, bench in enumerate(benches):
            response = client.get(bench.path)
            response.raise_for_status()
            body = response.content
            detail = f"{len(body):,} bytes"
            if not bench.is_read:
                entries = len(response.json().get("entry", []))
                if entries < 10:
                    raise RuntimeError(f"{bench.path} found {entries} entries, not the 10 asked for")
                detail += f", {entries} entries"
            print(f"  {bench.name:<15} GET {bench.path}  ->  {detail}")
            body_file = workdir / f"body-{i}.json"
            body_file.write_bytes(body)
            manifest[bench.baseline_path] = str(body_file)
        (workdir / "manifest.json").write_text(json.dumps(manifest))
    return benches


def measure(
    benches: list[Bench], base: Server, gate: Server, args: argparse.Namespace, free: Server | None = None
) -> None:
    for bench in benches:  # warm both (caches, connection pools), results discarded
        wrk(base.base + bench.baseline_path, connections=args.connections, seconds=1)
        wrk(gate.base + bench.path, connections=args.connections, seconds=1)
        if free is not None:
            wrk(free.base + bench.path, connections=args.connections, seconds=1)
    for rnd in range(args.rounds):
        for bench in benches:
            b = wrk(base.base + bench.baseline_path, connections=args.connections, seconds=args.seconds)
            g = wrk(gate.base + bench.path, connections=args.connections, seconds=args.seconds, cpu_of=gate)
            bench.base_rps.append(b.rps)
            bench.gate_rps.append(g.rps)
            extra = ""
            if free is not None:
                f = wrk(
                    free.base + bench.path, connections=args.connections, seconds=args.seconds, cpu_of=free
                )
                bench.gate_cpu.append(g.cpu_seconds / (g.rps * args.seconds) * 1e6)
                bench.free_cpu.append(f.cpu_seconds / (f.rps * args.seconds) * 1e6)
                bench.free_rps.append(f.rps)
                extra = f" ({f.rps:,.0f} without audit)"
            print(f"  round {rnd + 1} {bench.name:<15} {b.rps:>9,.0f} vs {g.rps:>8,.0f} req/s{extra}")
    for _ in range(args.rounds):
        for bench in benches:
            b = wrk(base.base + bench.baseline_path, connections=1, seconds=args.latency_seconds)
            g = wrk(gate.base + bench.path, connections=1, seconds=args.latency_seconds)
            bench.base_p50.append(b.p50_ms)
            bench.gate_p50.append(g.p50_ms)


def print_settings(title: str, args: argparse.Namespace) -> None:
    print()
    print(f"{title}: {args.connections} connections, {args.seconds:g} s x {args.rounds} rounds interleaved;")
    print(f"p50 at 1 connection, {args.latency_seconds:g} s x {args.rounds} rounds; medians")


def report(title: str, benches: list[Bench], args: argparse.Namespace) -> bool:
    med = statistics.median
    print_settings(title, args)
    head = (
        f"{'benchmark':<15} {'what':<36} {'base req/s':>10} {'rzcp req/s':>10} {'ratio':>6} "
        f"{'base p50':>9} {'rzcp p50':>9}  aim"
    )
    print(head)
    print("-" * len(head))
    met = True
    for b in benches:
        aim = ""
        if b.is_read:
            ok = b.ratio >= READ_AIM
            met = met and ok
            aim = f">= {READ_AIM:.2f} {'met' if ok else 'NOT met'}"
        print(
            f"{b.name:<15} {b.note:<36} {med(b.base_rps):>10,.0f} {med(b.gate_rps):>10,.0f} {b.ratio:>6.2f} "
            f"{med(b.base_p50):>7.2f}ms {med(b.gate_p50):>7.2f}ms  {aim}"
        )
    if any(b.free_rps for b in benches):
        print()
        print("the audit's share (--audit-variant: the same gateway without its audit middleware):")
        for b in benches:
            # one worker process at saturation: 1/req-per-s is the process's time per request
            cost = statistics.median(
                (1 / g - 1 / f) * 1e6 for g, f in zip(b.gate_rps, b.free_rps, strict=True)
            )
            cpu = statistics.median(g - f for g, f in zip(b.gate_cpu, b.free_cpu, strict=True))
            print(
                f"  {b.name:<15} {med(b.free_rps):>8,.0f} req/s without audit, ratio "
                f"{statistics.median(f / x for f, x in zip(b.free_rps, b.base_rps, strict=True)):.2f}; "
                f"the audit costs {cost:,.0f} µs of the process per request; CPU per request "
                f"{med(b.gate_cpu):,.0f} µs with, {med(b.free_cpu):,.0f} µs without: {cpu:,.0f} µs"
            )
    return met


@contextlib.contextmanager
def scratch_gateways(kind: str, workdir: Path) -> Iterator[tuple[dict[str, str], Servers]]:
    """A fresh database and the servers to start on it, with the gateway's environment for it. The servers
    stop (the inner block) before the database is dropped (the outer one)."""
    with database(kind, workdir) as url, Servers() as servers:
        yield {"RZCP_DATABASE_URL": url, "RZCP_LOG_LEVEL": "WARNING"}, servers


def run_one(kind: str, args: argparse.Namespace, workdir: Path) -> bool:
    title = {"sqlite": "SQLite (aiosqlite, WAL)", "postgresql": "PostgreSQL (asyncpg)"}[kind]
    print(f"\n== {title}")
    with scratch_gateways(kind, workdir) as (env, servers):
        # The store alone: no bearer token (authentication gets its own benchmark, token vs none).
        env["RZCP_AUTH_ENABLED"] = "false"
        gateway = start_uvicorn(servers, f"gateway-{kind}", "gateway_app:create", env, "/fhir/metadata")
        benches = prepare(gateway, workdir)
        manifest = {"BENCH_BASELINE_MANIFEST": str(workdir / "manifest.json")}
        baseline = start_uvicorn(servers, f"baseline-{kind}", "baseline_app:create", manifest, "/docs")
        free = None
        if args.audit_variant:
            free = start_uvicorn(
                servers, f"unaudited-{kind}", "gateway_app:create_unaudited", env, "/fhir/metadata"
            )
        measure(benches, baseline, gateway, args, free)
    return report(title, benches, args)


def common_parser(description: str | None) -> argparse.ArgumentParser:
    """The options run_store.py and bench_auth.py share."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=5, help="length of each throughput round")
    parser.add_argument("--latency-seconds", type=float, default=3, help="length of each 1-connection round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 600 and 0 < args.latency_seconds <= 600 and 1 <= args.rounds <= 50):
        parser.error("--seconds/--latency-seconds must be in (0, 600] and --rounds in [1, 50]")
    return args


def run_databases(
    args: argparse.Namespace,
    run_one: Callable[[str, argparse.Namespace, Path], bool],
    prefix: str,
    verdict: Callable[[str, bool], str],
) -> int:
    """`run_one` for each database asked for, in a scratch folder; prints `verdict` for each at the end.
    SIGTERM and Ctrl-C (also when started in the background) become KeyboardInterrupt, which unwinds
    through the `with` blocks that stop the servers and drop the database."""
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk` (a C HTTP load generator)")
        return 2

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results: dict[str, bool] = {}
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        for kind in kinds:
            results[kind] = run_one(kind, args, workdir)
    except MissingTool as exc:
        print(exc)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    for kind, met in results.items():
        print(verdict(kind, met))
    return 0


def main(argv: list[str] | None = None) -> int:
    options = common_parser(__doc__)
    options.add_argument(
        "--audit-variant",
        action="store_true",
        help="also measure the gateway without its audit middleware, to show what the audit costs",
    )
    args = parse(options, argv)

    def verdict(kind: str, met: bool) -> str:
        return f"aim (read >= {READ_AIM:.2f} of the bare endpoint) on {kind}: {'met' if met else 'NOT met'}"

    return run_databases(args, run_one, "rzcp-bench-", verdict)


if __name__ == "__main__":
    sys.exit(main())
