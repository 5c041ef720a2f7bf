"""The exchange's pull through the gateway, against a bare proxy and against the members themselves.

    python bench/bench_exchange.py [--seconds N] [--rounds N] [--delay-ms N] [--json FILE]

Starts, each in its own process on a loopback port: ten simulated members (`rzcp member-sim`, the
foundation's FHIR server on its own SQLite database, holding the Synthea patient's 13 Conditions), the
gateway (`rzcp.app`, SQLite, token auth, consent, audit trail and tagging all on: the whole path) and the
bare FastAPI proxy of bench/bench_transport.py over aiohttp (the fastest client measured there), forwarding
to member 0. The gateway knows three regional patients: one held by member 0 only, one by members 0-2, one by
all ten; each permits the requesting GP practice everything.

Measured with wrk, interleaved per round (medians over the rounds):
- throughput at 32 connections: a 1-member pull through the gateway against the proxy (aim >= 0.70);
- the median latency at one connection: the 1-member pull against calling member 0 directly (aim: under
  1 ms added);
- the median latency of a 10-member pull against the slowest member called directly (aim <= 1.2x), twice:
  with the ten CPU-bound simulated members (on two cores this measures their summed CPU), and with ten
  members that wait (one aiohttp process on ten ports, `--delay-ms`, serving the same Bundles as the
  simulated members after `asyncio.sleep`): the fan-out itself;
- the gateway's CPU per request of a 3-member pull against a 1-member pull, at 8 connections (aim < 2x),
  twice: with the CPU-bound simulated members, and with the waiting members (each answering for the
  patient asked, so the gateway's checks keep every entry), where the members' CPU does not compete with
  the gateway's for the two cores.
Everything it starts is stopped at the end. Exit codes: 0 done, 1 an error, 2 wrk missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import TICKS, free_port

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT / "data" / "synthea" / "uscore_bundle_patient_85.json"
MEMBERS = 10
PRACTITIONER = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900012345"
GROUPS = {"one": 1, "three": 3, "ten": MEMBERS}
#: The regional patient held by the ten waiting members (URAs 7100000i), with the "ten" group's local ids.
DELAYED = "delayed"
#: Regional patients held by the first one and the first three waiting members, under local ids of their
#: own (the waiting members answer for whichever patient is asked): the 3-vs-1 CPU ratio without CPU-bound
#: members.
WAITING = {"waiting1": 1, "waiting3": 3}


@dataclass
class Proc:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def start(name: str, command: list[str], port: int, ready: str, env: dict[str, str] | None = None) -> Proc:
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    started = Proc(name, port, proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.stderr.read().decode()[-800:]}")  # type: ignore[union-attr]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(started.base + ready, timeout=1).status_code == 200:
                return started
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer within 60 s")


async def prepare(folder: Path, ports: list[int], delayed_ports: list[int]) -> dict[str, object]:
    """Member databases, the gateway's registry, locations and consents; returns URLs and a token key."""
    from rzcp.auth import registry
    from rzcp.consent.cache import note_consent_change
    from rzcp.consent.cases import consent_from_compact
    from rzcp.consent.policy import load_policy
    from rzcp.exchange.directory import Directory
    from rzcp.exchange.locator import Locator
    from rzcp.exchange.secrets import BsnProtector, member_secret_box
    from rzcp.fhir.search.definitions import SearchRegistry
    from rzcp.membersim.bsn import derive_test_bsn
    from rzcp.membersim.loader import load_member_data
    from rzcp.settings import Settings
    from rzcp.store.db import Database
    from rzcp.store.migrate import upgrade
    from rzcp.store.resources import ResourceStore

    locals_: dict[tuple[str, int], str] = {}
    for i in range(MEMBERS):
        url = f"sqlite+aiosqlite:///{folder / f'member{i}.db'}"
        for group in GROUPS:
            report = await load_member_data(url, [SYNTHEA], id_prefix=f"{group}{i}-", types=["Condition"])
            locals_[(group, i)] = next(iter(report.patients))
    database = Database(f"sqlite+aiosqlite:///{folder / 'gateway.db'}")
    settings = Settings(database_url=database.url)
    search = SearchRegistry.default()
    directory = Directory(member_secret_box(settings.secret_key), 10.0)
    locator = Locator(BsnProtector(settings.bsn_secret))
    key = RSAKey.generate_key(2048, parameters={"kid": "bench-1"}, private=True)
    patients: dict[str, str] = {}
    await upgrade(database)
    async with database.write() as conn:
        for i, port in enumerate(ports):
            await directory.add_member(
                conn,
                search,
                ura=f"7000000{i}",
                name=f"Member {i}",
                category="ziekenhuizen-labs",
                endpoint=f"http://127.0.0.1:{port}/fhir",
            )
        for i, port in enumerate(delayed_ports):
            await directory.add_member(
                conn,
                search,
                ura=f"7100000{i}",
                name=f"Waiting member {i}",
                category="ziekenhuizen-labs",
                endpoint=f"http://127.0.0.1:{port}/fhir",
            )
        await directory.add_member(
            conn,
            search,
            ura="80000000",
            name="Requesting GP",
            category="huisartsen",
            endpoint="http://127.0.0.1:9/",
        )
        await registry.add_client(
            conn,
            client_id="bench-gp",
            member_ura="80000000",
            scope="system/*.cruds",
            role="member",
            jwks={"keys": [key.as_dict(private=False)]},
        )
        for group, count in [*GROUPS.items(), (DELAYED, MEMBERS), *WAITING.items()]:
            bsn = derive_test_bsn(f"bench-{group}")
            for i in range(count):
                if group == DELAYED:
                    ura, local = f"7100000{i}", locals_[("ten", i)]
                elif group in WAITING:
                    ura, local = f"7100000{i}", f"{group}-{i}"
                else:
                    ura, local = f"7000000{i}", locals_[(group, i)]
                patients[group] = await locator.announce(conn, search, ura, bsn, local)
            consent = consent_from_compact(
                {"id": f"bench-{group}", "permit": {"to": "huisartsen"}},
                load_policy(),
                patient=f"Patient/{patients[group]}",
            )
            consent.pop("meta")
            await ResourceStore(conn, search).create(consent, res_id=consent["id"])
            await note_consent_change(conn, f"Patient/{patients[group]}", consent["id"])
    await database.dispose()
    return {"database": database.url, "patients": patients, "locals": locals_, "key": key}


def token(gateway: str, key: RSAKey) -> str:
    url = f"{gateway}/auth/token"
    claims = {
        "iss": "bench-gp",
        "sub": "bench-gp",
        "aud": url,
        "exp": int(time.time()) + 240,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.cruds",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    response = httpx.post(url, data=form, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


def serve_delayed(delay_ms: int, ports: list[int], upstreams: list[str]) -> None:
    """Ten members that wait instead of computing: port i answers every GET of /fhir/Condition with the
    Bundle member i gave for the "ten" patient (fetched once at start), after `delay_ms`, its patient
    references turned into the patient asked for."""
    from aiohttp import web

    bodies = [httpx.get(url, timeout=30).content for url in upstreams]
    asked = [httpx.URL(url).params["patient"].encode() for url in upstreams]

    def app(body: bytes, original: bytes) -> web.Application:
        async def search(request: web.Request) -> web.Response:
            await asyncio.sleep(delay_ms / 1000)
            patient = request.query.get("patient", "").encode()
            answer = body if patient in (b"", original) else body.replace(original, patient)
            return web.Response(body=answer, content_type="application/fhir+json")

        async def metadata(_request: web.Request) -> web.Response:
            return web.json_response({"resourceType": "CapabilityStatement"})

        application = web.Application()
        application.router.add_get("/fhir/Condition", search)
        application.router.add_get("/fhir/metadata", metadata)
        return application

    async def run() -> None:
        for port, body, original in zip(ports, bodies, asked, strict=True):
            runner = web.AppRunner(app(body, original), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(run())


_LATENCY = re.compile(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_REQUESTS = re.compile(r"(\d+) requests in")
_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class Run:
    rps: float
    p50_ms: float
    cpu_us: float
    bad: int


def wrk(target: Proc, url: str, connections: int, seconds: int, headers: list[str] = ()) -> Run:
    before = target.cpu_seconds()
    command = ["wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    cpu = target.cpu_seconds() - before
    requests = int(_REQUESTS.search(out).group(1))  # type: ignore[union-attr]
    latency = _LATENCY.search(out)
    bad = _BAD.search(out)
    return Run(
        requests / seconds,
        float(latency.group(1)) * _UNIT[latency.group(2)] * 1000 if latency else float("nan"),
        cpu / max(requests, 1) * 1e6,
        int(bad.group(1)) if bad else 0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--delay-ms", type=int, default=20, help="the waiting members' answer time")
    parser.add_argument("--serve-delayed", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_delayed:
        delay, *rest = args.serve_delayed
        half = len(rest) // 2
        serve_delayed(int(delay), [int(p) for p in rest[:half]], rest[half:])
        return 0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="rzcp-bench-exchange-"))
    ports = [free_port() for _ in range(MEMBERS)]
    delayed_ports = [free_port() for _ in range(MEMBERS)]
    gateway_port, proxy_port = free_port(), free_port()
    facts = asyncio.run(prepare(folder, ports, delayed_ports))
    running: list[Proc] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        for i, port in enumerate(ports):
            command = [
                sys.executable,
                "-m",
                "rzcp.cli",
                "member-sim",
                "--name",
                f"Member {i}",
                "--ura",
                f"7000000{i}",
            ]
            command += ["--port", str(port), "--database", f"sqlite+aiosqlite:///{folder / f'member{i}.db'}"]
            running.append(start(f"member{i}", command, port, "/fhir/metadata"))
        locals_: dict[tuple[str, int], str] = facts["locals"]  # type: ignore[assignment]
        copied = [
            f"{m.base}/fhir/Condition?patient=Patient/{locals_[('ten', i)]}&_count=100"
            for i, m in enumerate(running)
        ]
        command = [
            sys.executable,
            __file__,
            "--serve-delayed",
            str(args.delay_ms),
            *map(str, delayed_ports),
            *copied,
        ]
        waiting = start("waiting members", command, delayed_ports[-1], "/fhir/metadata")
        running.append(waiting)
        gateway_env = {
            "RZCP_DATABASE_URL": str(facts["database"]),
            "RZCP_PUBLIC_BASE_URL": f"http://127.0.0.1:{gateway_port}/fhir",
            "RZCP_OUTBOX_WORKER": "false",
            "RZCP_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "uvicorn", "rzcp.app:app_from_environment", "--factory"]
        command += [
            "--host",
            "127.0.0.1",
            "--port",
            str(gateway_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        gateway = start("gateway", command, gateway_port, "/healthz", gateway_env)
        running.append(gateway)
        upstream = running[0].base + "/fhir"
        command = [
            sys.executable,
            str(ROOT / "bench" / "bench_transport.py"),
            "--serve",
            "aiohttp",
            str(proxy_port),
            upstream,
        ]
        proxy = start("proxy", command, proxy_port, "/fhir/metadata")
        running.append(proxy)
        headers = [
            f"Authorization: Bearer {token(gateway.base, facts['key'])}",  # type: ignore[arg-type]
            "X-Purpose-Of-Use: TREAT",
            f"X-Acting-Practitioner: {PRACTITIONER}",
        ]
        patients: dict[str, str] = facts["patients"]  # type: ignore[assignment]
        pull = {
            g: f"{gateway.base}/fhir/Condition?patient=Patient/{patients[g]}&_count=100"
            for g in [*GROUPS, DELAYED, *WAITING]
        }
        waiting_direct = [
            f"http://127.0.0.1:{port}/fhir/Condition?patient=Patient/{locals_[('ten', i)]}"
            for i, port in enumerate(delayed_ports)
        ]
        direct = [
            f"{m.base}/fhir/Condition?patient=Patient/{locals_[('one', i)]}&_count=100"
            for i, m in enumerate(running[:MEMBERS])
        ]
        proxied = f"{proxy.base}/fhir/Condition?patient=Patient/{locals_[('one', 0)]}&_count=100"
        check = httpx.get(pull["ten"], headers=dict(h.split(": ", 1) for h in headers), timeout=30).json()
        assert check.get("total") == 13 * MEMBERS, check.get("total")  # the whole path, every member answered
        check = httpx.get(pull[DELAYED], headers=dict(h.split(": ", 1) for h in headers), timeout=30).json()
        assert check.get("total") == 13 * MEMBERS, check.get("total")  # the same Bundles from the waiting ten
        for group, count in WAITING.items():
            check = httpx.get(pull[group], headers=dict(h.split(": ", 1) for h in headers), timeout=30).json()
            assert check.get("total") == 13 * count, (group, check.get("total"))  # every entry kept
        for url, target in ((pull["one"], gateway), (proxied, proxy)):
            wrk(target, url, 8, 1, headers)  # warm up
        results: dict[str, list[Run]] = {}

        def measure(name: str, target: Proc, url: str, connections: int, with_auth: bool = True) -> None:
            run = wrk(target, url, connections, args.seconds, headers if with_auth else [])
            results.setdefault(name, []).append(run)
            print(
                f"  {name:<24} {run.rps:8.0f} req/s  p50 {run.p50_ms:7.2f} ms  cpu {run.cpu_us:6.0f} µs/req"
                + (f"  NON-2xx {run.bad}" if run.bad else ""),
                flush=True,
            )

        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            measure("gateway 1 member c32", gateway, pull["one"], 32)
            measure("proxy c32", proxy, proxied, 32, with_auth=False)
            measure("gateway 1 member c1", gateway, pull["one"], 1)
            measure("member 0 direct c1", running[0], direct[0], 1, with_auth=False)
            measure("proxy c1", proxy, proxied, 1, with_auth=False)
            measure("gateway 10 members c1", gateway, pull["ten"], 1)
            for i in range(MEMBERS):
                measure(f"member {i} direct c1", running[i], direct[i], 1, with_auth=False)
            measure("gateway 10 waiting c1", gateway, pull[DELAYED], 1)
            for i in range(MEMBERS):
                measure(f"waiting {i} direct c1", waiting, waiting_direct[i], 1, with_auth=False)
            measure("gateway 1 member c8", gateway, pull["one"], 8)
            measure("gateway 3 members c8", gateway, pull["three"], 8)
            measure("gateway 1 waiting c8", gateway, pull["waiting1"], 8)
            measure("gateway 3 waiting c8", gateway, pull["waiting3"], 8)
    finally:
        for proc in running:
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.proc.kill()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(folder, ignore_errors=True)

    def med(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[name])

    slowest = max(med(f"member {i} direct c1", "p50_ms") for i in range(MEMBERS))
    slowest_waiting = max(med(f"waiting {i} direct c1", "p50_ms") for i in range(MEMBERS))
    summary = {
        "rps_gateway_c32": med("gateway 1 member c32", "rps"),
        "rps_proxy_c32": med("proxy c32", "rps"),
        "p50_gateway_c1_ms": med("gateway 1 member c1", "p50_ms"),
        "p50_member_c1_ms": med("member 0 direct c1", "p50_ms"),
        "p50_proxy_c1_ms": med("proxy c1", "p50_ms"),
        "p50_gateway_10_members_ms": med("gateway 10 members c1", "p50_ms"),
        "p50_slowest_member_ms": slowest,
        "delay_ms": args.delay_ms,
        "p50_gateway_10_waiting_ms": med("gateway 10 waiting c1", "p50_ms"),
        "p50_slowest_waiting_ms": slowest_waiting,
        "cpu_1_member_us": med("gateway 1 member c8", "cpu_us"),
        "cpu_3_members_us": med("gateway 3 members c8", "cpu_us"),
        "cpu_1_waiting_us": med("gateway 1 waiting c8", "cpu_us"),
        "cpu_3_waiting_us": med("gateway 3 waiting c8", "cpu_us"),
    }
    summary["rps_ratio"] = summary["rps_gateway_c32"] / summary["rps_proxy_c32"]
    summary["added_latency_ms"] = summary["p50_gateway_c1_ms"] - summary["p50_member_c1_ms"]
    summary["fanout_ratio"] = summary["p50_gateway_10_members_ms"] / slowest
    summary["fanout_waiting_ratio"] = summary["p50_gateway_10_waiting_ms"] / slowest_waiting
    summary["cpu_ratio"] = summary["cpu_3_members_us"] / summary["cpu_1_member_us"]
    summary["cpu_waiting_ratio"] = summary["cpu_3_waiting_us"] / summary["cpu_1_waiting_us"]
    s = summary
    print(f"\nmedians over {args.rounds} interleaved rounds of {args.seconds} s")
    print(
        f"throughput c32: gateway {s['rps_gateway_c32']:.0f} req/s, proxy {s['rps_proxy_c32']:.0f}: "
        f"ratio {s['rps_ratio']:.2f} (aim >= 0.70)"
    )
    print(
        f"latency c1: gateway {s['p50_gateway_c1_ms']:.2f} ms, member direct {s['p50_member_c1_ms']:.2f} ms, "
        f"proxy {s['p50_proxy_c1_ms']:.2f} ms: added {s['added_latency_ms']:.2f} ms (aim < 1 ms)"
    )
    print(
        f"10-member pull p50 {s['p50_gateway_10_members_ms']:.2f} ms vs slowest member {slowest:.2f} ms: "
        f"{s['fanout_ratio']:.2f}x (aim <= 1.2x; CPU-bound members on shared cores)"
    )
    print(
        f"10-member pull, waiting members ({args.delay_ms} ms): "
        f"p50 {s['p50_gateway_10_waiting_ms']:.2f} ms vs slowest {slowest_waiting:.2f} ms: "
        f"{s['fanout_waiting_ratio']:.2f}x (aim <= 1.2x)"
    )
    print(
        f"CPU per request: 3 members {s['cpu_3_members_us']:.0f} µs, 1 member {s['cpu_1_member_us']:.0f} µs: "
        f"{s['cpu_ratio']:.2f}x (aim < 2x)"
    )
    print(
        f"CPU per request, waiting members: 3 members {s['cpu_3_waiting_us']:.0f} µs, "
        f"1 member {s['cpu_1_waiting_us']:.0f} µs: {s['cpu_waiting_ratio']:.2f}x (aim < 2x)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
