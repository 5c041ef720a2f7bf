"""The exchange's pull through the gateway, against a bare proxy and against the members themselves.

    python bench/bench_exchange.py [--seconds N] [--rounds N] [--delay-ms N] [--stagger-ms N] [--json FILE]

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
  simulated members after `asyncio.sleep`): the fan-out itself; and once more with those members
  staggered (member i waits `--stagger-ms` times i longer, as real members differ), against the slowest;
  beside the waiting members' pull, a bare fan-out to the same ten (one FastAPI endpoint asking them all at
  once over aiohttp and merging their entries: no token, consent, checks, tags or audit), the share of
  the 1.2x that any Python fan-out on the machine takes before the gateway's own work;
- the gateway's CPU per request of a 3-member pull against a 1-member pull, at 8 connections (aim < 2x),
  twice: with the CPU-bound simulated members, and with the waiting members (each answering for the
  patient asked, so the gateway's checks keep every entry), where the members' CPU does not compete with
  the gateway's for the two cores.
Everything it starts is stopped at the end. Exit codes: 0 done, 1 an error, 2 wrk missing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Server, Servers, WrkRun, exit_on_sigterm, free_port, write_json, wrk  # the sibling module

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
#: The regional patient held by the ten waiting members under local ids `staggered-i`, for which waiting
#: member i answers after `--delay-ms` plus i times `--stagger-ms`: members that differ, as real ones do.
STAGGERED = "staggered"


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
        holders = [(f"7000000{i}", f"Member {i}", port) for i, port in enumerate(ports)]
        holders += [(f"7100000{i}", f"Waiting member {i}", port) for i, port in enumerate(delayed_ports)]
        for ura, name, port in holders:
            await directory.add_member(
                conn,
                search,
                ura=ura,
                name=name,
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
        for group, count in [*GROUPS.items(), (DELAYED, MEMBERS), *WAITING.items(), (STAGGERED, MEMBERS)]:
            bsn = derive_test_bsn(f"bench-{group}")
            for i in range(count):
                if group == DELAYED:
                    ura, local = f"7100000{i}", locals_[("ten", i)]
                elif group in WAITING or group == STAGGERED:
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


def serve_delayed(delay_ms: int, stagger_ms: int, ports: list[int], upstreams: list[str]) -> None:
    """Ten members that wait instead of computing: port i answers every GET of /fhir/Condition with the
    Bundle member i gave for the "ten" patient (fetched once at start), after `delay_ms` (plus i times
    `stagger_ms` for the staggered patient), its patient references turned into the patient asked for."""
    from aiohttp import web

    bodies = [httpx.get(url, timeout=30).content for url in upstreams]
    asked = [httpx.URL(url).params["patient"].encode() for url in upstreams]

    def app(index: int, body: bytes, original: bytes) -> web.Application:
        async def search(request: web.Request) -> web.Response:
            patient = request.query.get("patient", "").encode()
            stagger = stagger_ms * index if patient.startswith(f"Patient/{STAGGERED}-".encode()) else 0
            await asyncio.sleep((delay_ms + stagger) / 1000)
            answer = body if patient in (b"", original) else body.replace(original, patient)
            return web.Response(body=answer, content_type="application/fhir+json")

        async def metadata(_request: web.Request) -> web.Response:
            return web.json_response({"resourceType": "CapabilityStatement"})

        application = web.Application()
        application.router.add_get("/fhir/Condition", search)
        application.router.add_get("/fhir/metadata", metadata)
        return application

    async def run() -> None:
        for index, (port, body, original) in enumerate(zip(ports, bodies, asked, strict=True)):
            runner = web.AppRunner(app(index, body, original), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(run())


def serve_fanout(port: int, upstreams: list[str]) -> None:
    """The least any merging fan-out does, as a reference for the 10-member pulls: one FastAPI endpoint
    (uvicorn, as the gateway) that asks every upstream at once over one aiohttp session, parses each
    answer and returns their entries in one Bundle. No token, consent, checks, tags or audit."""
    import aiohttp
    import orjson
    import uvicorn
    from fastapi import FastAPI, Response

    session: list[aiohttp.ClientSession] = []
    app = FastAPI()

    async def fetch(url: str) -> list[object]:
        async with session[0].get(url) as answer:
            return orjson.loads(await answer.read()).get("entry", [])

    @app.get("/fhir/metadata")
    async def metadata() -> dict[str, str]:
        return {"resourceType": "CapabilityStatement"}

    @app.get("/fanout")
    async def fanout() -> Response:
        if not session:
            session.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)))
        parts = await asyncio.gather(*(fetch(url) for url in upstreams))
        entries = [entry for part in parts for entry in part]
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
        return Response(orjson.dumps(bundle), media_type="application/fhir+json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def report(results: dict[str, list[WrkRun]], args: argparse.Namespace) -> dict[str, float]:
    """Medians over the rounds and the ratios the aims are about, printed; returned for --json."""

    def med(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[name])

    slowest = max(med(f"member {i} direct c1", "p50_ms") for i in range(MEMBERS))
    slowest_waiting = max(med(f"waiting {i} direct c1", "p50_ms") for i in range(MEMBERS))
    summary = {
        "rps_gateway_c32": med("gateway 1 member c32", "per_second"),
        "rps_proxy_c32": med("proxy c32", "per_second"),
        "p50_gateway_c1_ms": med("gateway 1 member c1", "p50_ms"),
        "p50_member_c1_ms": med("member 0 direct c1", "p50_ms"),
        "p50_proxy_c1_ms": med("proxy c1", "p50_ms"),
        "p50_gateway_10_members_ms": med("gateway 10 members c1", "p50_ms"),
        "p50_slowest_member_ms": slowest,
        "delay_ms": args.delay_ms,
        "p50_gateway_10_waiting_ms": med("gateway 10 waiting c1", "p50_ms"),
        "p50_slowest_waiting_ms": slowest_waiting,
        "p50_bare_fanout_waiting_ms": med("bare fan-out 10 waiting c1", "p50_ms"),
        "stagger_ms": args.stagger_ms,
        "p50_gateway_10_staggered_ms": med("gateway 10 staggered c1", "p50_ms"),
        "p50_slowest_staggered_ms": med("slowest staggered direct c1", "p50_ms"),
        "cpu_1_member_us": med("gateway 1 member c8", "cpu_us"),
        "cpu_3_members_us": med("gateway 3 members c8", "cpu_us"),
        "cpu_1_waiting_us": med("gateway 1 waiting c8", "cpu_us"),
        "cpu_3_waiting_us": med("gateway 3 waiting c8", "cpu_us"),
    }
    summary["rps_ratio"] = summary["rps_gateway_c32"] / summary["rps_proxy_c32"]
    summary["added_latency_ms"] = summary["p50_gateway_c1_ms"] - summary["p50_member_c1_ms"]
    summary["fanout_ratio"] = summary["p50_gateway_10_members_ms"] / slowest
    summary["fanout_waiting_ratio"] = summary["p50_gateway_10_waiting_ms"] / slowest_waiting
    summary["bare_fanout_waiting_ratio"] = summary["p50_bare_fanout_waiting_ms"] / slowest_waiting
    summary["fanout_staggered_ratio"] = (
        summary["p50_gateway_10_staggered_ms"] / summary["p50_slowest_staggered_ms"]
    )
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
        f"{s['fanout_waiting_ratio']:.2f}x (aim <= 1.2x); a bare fan-out to the same ten "
        f"{s['p50_bare_fanout_waiting_ms']:.2f} ms: {s['bare_fanout_waiting_ratio']:.2f}x"
    )
    print(
        f"10-member pull, staggered members ({args.delay_ms} to "
        f"{args.delay_ms + (MEMBERS - 1) * args.stagger_ms} ms): "
        f"p50 {s['p50_gateway_10_staggered_ms']:.2f} ms vs slowest {s['p50_slowest_staggered_ms']:.2f} ms: "
        f"{s['fanout_staggered_ratio']:.2f}x (aim <= 1.2x)"
    )
    print(
        f"CPU per request: 3 members {s['cpu_3_members_us']:.0f} µs, 1 member {s['cpu_1_member_us']:.0f} µs: "
        f"{s['cpu_ratio']:.2f}x (aim < 2x)"
    )
    print(
        f"CPU per request, waiting members: 3 members {s['cpu_3_waiting_us']:.0f} µs, "
        f"1 member {s['cpu_1_waiting_us']:.0f} µs: {s['cpu_waiting_ratio']:.2f}x (aim < 2x)"
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--delay-ms", type=int, default=20, help="the waiting members' answer time")
    parser.add_argument(
        "--stagger-ms", type=int, default=2, help="staggered pull: waiting member i waits i times this longer"
    )
    parser.add_argument("--serve-delayed", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--serve-fanout", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fanout:
        port, *upstreams = args.serve_fanout
        serve_fanout(int(port), upstreams)
        return 0
    if args.serve_delayed:
        delay, stagger, *rest = args.serve_delayed
        half = len(rest) // 2
        serve_delayed(int(delay), int(stagger), [int(p) for p in rest[:half]], rest[half:])
        return 0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    ports = [free_port() for _ in range(MEMBERS)]
    delayed_ports = [free_port() for _ in range(MEMBERS)]
    gateway_port, proxy_port, fanout_port = free_port(), free_port(), free_port()
    scratch = tempfile.TemporaryDirectory(prefix="rzcp-bench-exchange-", ignore_cleanup_errors=True)
    # Leaving the block stops the servers first, then removes their databases.
    with exit_on_sigterm(), scratch as tmp, Servers() as servers:
        folder = Path(tmp)
        facts = asyncio.run(prepare(folder, ports, delayed_ports))
        members: list[Server] = []
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
            command += [
                "--port",
                str(port),
                "--database",
                f"sqlite+aiosqlite:///{folder / f'member{i}.db'}",
            ]
            members.append(servers.start(f"member{i}", command, port=port, ready="/fhir/metadata"))
        locals_: dict[tuple[str, int], str] = facts["locals"]  # type: ignore[assignment]
        copied = [
            f"{m.base}/fhir/Condition?patient=Patient/{locals_[('ten', i)]}&_count=100"
            for i, m in enumerate(members)
        ]
        command = [
            sys.executable,
            __file__,
            "--serve-delayed",
            str(args.delay_ms),
            str(args.stagger_ms),
            *map(str, delayed_ports),
            *copied,
        ]
        waiting = servers.start("waiting members", command, port=delayed_ports[-1], ready="/fhir/metadata")
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
        gateway = servers.start("gateway", command, port=gateway_port, ready="/healthz", env=gateway_env)
        upstream = members[0].base + "/fhir"
        command = [
            sys.executable,
            str(ROOT / "bench" / "bench_transport.py"),
            "--serve",
            "aiohttp",
            str(proxy_port),
            upstream,
        ]
        proxy = servers.start("proxy", command, port=proxy_port, ready="/fhir/metadata")
        headers = {
            "Authorization": f"Bearer {token(gateway.base, facts['key'])}",  # type: ignore[arg-type]
            "X-Purpose-Of-Use": "TREAT",
            "X-Acting-Practitioner": PRACTITIONER,
        }
        patients: dict[str, str] = facts["patients"]  # type: ignore[assignment]
        pull = {
            g: f"{gateway.base}/fhir/Condition?patient=Patient/{patients[g]}&_count=100"
            for g in [*GROUPS, DELAYED, *WAITING, STAGGERED]
        }
        slowest_staggered = (
            f"http://127.0.0.1:{delayed_ports[-1]}/fhir/Condition?patient=Patient/{STAGGERED}-{MEMBERS - 1}"
        )
        waiting_direct = [
            f"http://127.0.0.1:{port}/fhir/Condition?patient=Patient/{locals_[('ten', i)]}"
            for i, port in enumerate(delayed_ports)
        ]
        command = [sys.executable, __file__, "--serve-fanout", str(fanout_port), *waiting_direct]
        fanout = servers.start("bare fan-out", command, port=fanout_port, ready="/fhir/metadata")
        direct = [
            f"{m.base}/fhir/Condition?patient=Patient/{locals_[('one', i)]}&_count=100"
            for i, m in enumerate(members)
        ]
        proxied = f"{proxy.base}/fhir/Condition?patient=Patient/{locals_[('one', 0)]}&_count=100"
        check = httpx.get(pull["ten"], headers=headers, timeout=30).json()
        assert check.get("total") == 13 * MEMBERS, check.get("total")  # the whole path, every member answered
        check = httpx.get(pull[DELAYED], headers=headers, timeout=30).json()
        assert check.get("total") == 13 * MEMBERS, check.get("total")  # the same Bundles from the waiting ten
        for group, count in [*WAITING.items(), (STAGGERED, MEMBERS)]:
            check = httpx.get(pull[group], headers=headers, timeout=30).json()
            assert check.get("total") == 13 * count, (group, check.get("total"))  # every entry kept
        for url in (pull["one"], proxied):
            wrk(url, connections=8, seconds=1, headers=headers, timeout=10)  # warm up
        results: dict[str, list[WrkRun]] = {}

        def measure(name: str, target: Server, url: str, connections: int, with_auth: bool = True) -> None:
            run = wrk(
                url,
                connections=connections,
                seconds=args.seconds,
                headers=headers if with_auth else None,
                timeout=10,
                cpu_of=target,
            )
            results.setdefault(name, []).append(run)
            print(
                f"  {name:<24} {run.per_second:8.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
                f"cpu {run.cpu_us:6.0f} µs/req" + (f"  NON-2xx {run.non_2xx}" if run.non_2xx else ""),
                flush=True,
            )

        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            measure("gateway 1 member c32", gateway, pull["one"], 32)
            measure("proxy c32", proxy, proxied, 32, with_auth=False)
            measure("gateway 1 member c1", gateway, pull["one"], 1)
            measure("member 0 direct c1", members[0], direct[0], 1, with_auth=False)
            measure("proxy c1", proxy, proxied, 1, with_auth=False)
            measure("gateway 10 members c1", gateway, pull["ten"], 1)
            for i in range(MEMBERS):
                measure(f"member {i} direct c1", members[i], direct[i], 1, with_auth=False)
            measure("gateway 10 waiting c1", gateway, pull[DELAYED], 1)
            measure("bare fan-out 10 waiting c1", fanout, f"{fanout.base}/fanout", 1, with_auth=False)
            for i in range(MEMBERS):
                measure(f"waiting {i} direct c1", waiting, waiting_direct[i], 1, with_auth=False)
            measure("gateway 10 staggered c1", gateway, pull[STAGGERED], 1)
            measure("slowest staggered direct c1", waiting, slowest_staggered, 1, with_auth=False)
            measure("gateway 1 member c8", gateway, pull["one"], 8)
            measure("gateway 3 members c8", gateway, pull["three"], 8)
            measure("gateway 1 waiting c8", gateway, pull["waiting1"], 8)
            measure("gateway 3 waiting c8", gateway, pull["waiting3"], 8)

    summary = report(results, args)
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
