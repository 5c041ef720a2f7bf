"""Which HTTP client should carry the gateway's outgoing calls? A bare FastAPI proxy, measured three ways.

    python bench/bench_transport.py [--seconds N] [--rounds N] [--concurrency 1,32] [--json FILE]

Starts, each in its own process on a loopback port:
- an upstream that answers every GET with the same real FHIR searchset Bundle (Observations of a Synthea
  patient from data/synthea, about 10 kB), as cheap as an ASGI app can be, so the proxy is what is measured;
- three copies of one bare FastAPI proxy (`GET /fhir/{path}` forwards path and query to the upstream and
  returns the body as `Response(bytes)`), differing only in the client:
  `httpx` (plain httpx.AsyncClient), `httpx-aiohttp` (httpx.AsyncClient over httpx_aiohttp.AiohttpTransport)
  and `aiohttp` (aiohttp.ClientSession directly); each with explicit limits (64 connections, all kept alive).

`wrk` drives each proxy at each concurrency for --seconds, interleaved (round 1: httpx, httpx-aiohttp,
aiohttp; round 2: the same ...), so drift of the shared 2-core machine hits all alike. Per run it records
requests/s, the median latency, and the proxy process's CPU time (user+system from /proc) divided by the
requests it served. Reported: medians over the rounds, and each variant's ratio to plain httpx.

Everything it starts is stopped at the end, also on Ctrl-C. Exit codes: 0 done, 1 an error, 2 wrk missing.
Runs only on loopback; each wrk run is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server, Servers, WrkRun, exit_on_sigterm, free_port, write_json, wrk  # the sibling module

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("httpx", "httpx-aiohttp", "aiohttp")

# --- the processes under test (run with `python bench_transport.py --serve KIND PORT [UPSTREAM]`) ----------


def _upstream_app(body: bytes):
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _searchset() -> bytes:
    bundle = json.loads((ROOT / "data/synthea/uscore_bundle_patient_85.json").read_text())
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"][
        :10
    ]
    searchset = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in observations
        ],
    }
    return json.dumps(searchset).encode()


def _proxy_app(kind: str, upstream: str):
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30)
        timeout = httpx.Timeout(10.0)
        if kind == "httpx":
            client = httpx.AsyncClient(base_url=upstream, limits=limits, timeout=timeout)
        elif kind == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            client = httpx.AsyncClient(
                base_url=upstream, limits=limits, timeout=timeout, transport=AiohttpTransport(limits=limits)
            )
        else:
            import aiohttp

            client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=10.0),
            )
        state["client"] = client
        yield
        await client.close() if kind == "aiohttp" else await client.aclose()

    app = FastAPI(lifespan=lifespan)

    if kind == "aiohttp":

        @app.get("/fhir/{path:path}")
        async def forward_aiohttp(path: str, request: Request) -> Response:
            session = state["client"]
            async with session.get(
                f"{upstream}/{path}", params=list(request.query_params.multi_items())
            ) as answer:  # type: ignore[attr-defined]
                body = await answer.read()
                return Response(body, status_code=answer.status, media_type="application/fhir+json")

    else:

        @app.get("/fhir/{path:path}")
        async def forward_httpx(path: str, request: Request) -> Response:
            client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
            answer = await client.get(f"/{path}", params=list(request.query_params.multi_items()))
            return Response(
                answer.content, status_code=answer.status_code, media_type="application/fhir+json"
            )

    return app


def serve(kind: str, port: int, upstream: str | None) -> None:
    import uvicorn

    app = _upstream_app(_searchset()) if kind == "upstream" else _proxy_app(kind, upstream or "")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="auto")


# --- the runner ------------------------------------------------------------------------------------------


def start(servers: Servers, kind: str, *args: str) -> Server:
    """This script again, serving `kind` (`--serve`); the upstream answers any GET, /fhir/metadata too."""
    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, str(port), *args]
    return servers.start(kind, command, port=port, ready="/fhir/metadata", wait=30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port, *rest = args.serve
        serve(kind, int(port), rest[0] if rest else None)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    path = "/fhir/Observation?patient=Patient/85&_count=10"
    runs: dict[tuple[str, int], list[WrkRun]] = {(v, c): [] for v in VARIANTS for c in levels}
    with exit_on_sigterm(), Servers() as servers:
        upstream = start(servers, "upstream")
        proxies = {v: start(servers, v, upstream.base + "/fhir") for v in VARIANTS}
        for proxy in proxies.values():  # warm each connection pool up before measuring
            wrk(proxy.base + path, connections=max(levels), seconds=1, timeout=5)
        for round_no in range(1, args.rounds + 1):
            for connections in levels:
                for variant, proxy in proxies.items():
                    run = wrk(
                        proxy.base + path,
                        connections=connections,
                        seconds=args.seconds,
                        timeout=5,
                        cpu_of=proxy,
                    )
                    runs[(variant, connections)].append(run)
                    print(
                        f"round {round_no} c={connections:<3} {variant:<14} {run.per_second:9.0f} req/s "
                        f"p50 {run.p50_ms:7.3f} ms  cpu {run.cpu_us:7.0f} µs/req"
                        + (f"  ({run.failures})" if run.failures else ""),
                        flush=True,
                    )
    summary = []
    print(f"\nmedians over {args.rounds} interleaved rounds of {args.seconds} s (ratios to plain httpx)")
    print(f"{'variant':<14} {'conc':>4} {'req/s':>9} {'x':>6} {'p50 ms':>8} {'CPU µs/req':>11} {'x':>6}")
    for connections in levels:
        base_rps = statistics.median(r.per_second for r in runs[("httpx", connections)])
        base_cpu = statistics.median(r.cpu_us for r in runs[("httpx", connections)])
        for variant in VARIANTS:
            measured = runs[(variant, connections)]
            rps = statistics.median(r.per_second for r in measured)
            cpu = statistics.median(r.cpu_us for r in measured)
            p50 = statistics.median(r.p50_ms for r in measured)
            summary.append(
                {"variant": variant, "concurrency": connections, "rps": rps, "p50_ms": p50, "cpu_us": cpu}
            )
            print(
                f"{variant:<14} {connections:>4} {rps:9.0f} {rps / base_rps:6.2f} {p50:8.3f} "
                f"{cpu:11.0f} {cpu / base_cpu:6.2f}"
            )
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
