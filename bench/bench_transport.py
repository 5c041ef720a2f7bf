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
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("httpx", "httpx-aiohttp", "aiohttp")
TICKS = os.sysconf("SC_CLK_TCK")

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@dataclass
class Processes:
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], ready: str) -> Proc:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        started = Proc(name, port, proc)
        self.started.append(started)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(started.base + ready, timeout=1).status_code == 200:
                    return started
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer within 30 s")

    def stop_all(self) -> None:
        for started in self.started:
            if started.proc.poll() is None:
                started.proc.send_signal(signal.SIGTERM)
        for started in self.started:
            try:
                started.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                started.proc.kill()
                started.proc.wait(timeout=5)
        self.started.clear()


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    running = Processes()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        yield running
    finally:
        running.stop_all()
        signal.signal(signal.SIGTERM, previous)


_LATENCY = re.compile(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_REQUESTS = re.compile(r"(\d+) requests in")
_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class Run:
    rps: float
    p50_ms: float
    cpu_us: float
    errors: str | None


def wrk(target: Proc, url: str, connections: int, seconds: int) -> Run:
    before = target.cpu_seconds()
    out = subprocess.run(
        ["wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    cpu = target.cpu_seconds() - before
    requests = int(_REQUESTS.search(out).group(1))  # type: ignore[union-attr]
    latency = _LATENCY.search(out)
    errors = _ERRORS.search(out)
    return Run(
        rps=requests / seconds,
        p50_ms=float(latency.group(1)) * _UNIT[latency.group(2)] * 1000 if latency else float("nan"),
        cpu_us=cpu / max(requests, 1) * 1e6,
        errors=errors.group(0) if errors else None,
    )


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
    runs: dict[tuple[str, int], list[Run]] = {(v, c): [] for v in VARIANTS for c in levels}
    with processes() as running:
        upstream = running.start("upstream", [], "/fhir/metadata")
        proxies = {v: running.start(v, [upstream.base + "/fhir"], "/fhir/metadata") for v in VARIANTS}
        for proxy in proxies.values():  # warm each connection pool up before measuring
            wrk(proxy, proxy.base + path, max(levels), 1)
        for round_no in range(1, args.rounds + 1):
            for connections in levels:
                for variant, proxy in proxies.items():
                    run = wrk(proxy, proxy.base + path, connections, args.seconds)
                    runs[(variant, connections)].append(run)
                    print(
                        f"round {round_no} c={connections:<3} {variant:<14} {run.rps:9.0f} req/s "
                        f"p50 {run.p50_ms:7.3f} ms  cpu {run.cpu_us:7.0f} µs/req"
                        + (f"  ({run.errors})" if run.errors else ""),
                        flush=True,
                    )
    summary = []
    print(f"\nmedians over {args.rounds} interleaved rounds of {args.seconds} s (ratios to plain httpx)")
    print(f"{'variant':<14} {'conc':>4} {'req/s':>9} {'x':>6} {'p50 ms':>8} {'CPU µs/req':>11} {'x':>6}")
    for connections in levels:
        base_rps = statistics.median(r.rps for r in runs[("httpx", connections)])
        base_cpu = statistics.median(r.cpu_us for r in runs[("httpx", connections)])
        for variant in VARIANTS:
            measured = runs[(variant, connections)]
            rps = statistics.median(r.rps for r in measured)
            cpu = statistics.median(r.cpu_us for r in measured)
            p50 = statistics.median(r.p50_ms for r in measured)
            summary.append(
                {"variant": variant, "concurrency": connections, "rps": rps, "p50_ms": p50, "cpu_us": cpu}
            )
            print(
                f"{variant:<14} {connections:>4} {rps:9.0f} {rps / base_rps:6.2f} {p50:8.3f} "
                f"{cpu:11.0f} {cpu / base_cpu:6.2f}"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
