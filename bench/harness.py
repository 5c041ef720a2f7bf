"""What the HTTP benchmarks share: servers on loopback ports, each in its own process group, and `wrk`.

A server gets a process group of its own so that Ctrl-C in the terminal reaches only the benchmark, which
then stops the server and anything the server spawned; its output goes to an anonymous file (a pipe
nobody reads would block a chatty server) that is shown when it fails to start.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port the kernel had free a moment ago; good enough on loopback, where nothing else races for it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's process so far (Linux /proc): CPU per request moves much
        less with other load on a shared machine than requests per second do."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def output_tail(self, chars: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]


@dataclass
class Servers:
    """Every server a run starts; leaving the `with` block stops them all, however it is left."""

    started: list[Server] = field(default_factory=list)

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        ready: str,
        env: Mapping[str, str] | None = None,
        wait: float = 60,
    ) -> Server:
        """Starts `command` (which listens on `port`) and returns once GET `ready` answers 200."""
        log = tempfile.TemporaryFile()  # noqa: SIM115 (as long-lived as the server; stop_all closes it)
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        server = Server(name, port, proc, log)
        self.started.append(server)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.output_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.base + ready, timeout=2).status_code == 200:
                    return server
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer within {wait:g} s:\n{server.output_tail()}")

    def stop_all(self) -> None:
        """SIGTERM to every group first, so that they wind down together, then SIGKILL for any that hang."""
        for server in self.started:
            if server.proc.poll() is None:
                _signal_group(server, signal.SIGTERM)
        for server in self.started:
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(server, signal.SIGKILL)
                server.proc.wait(timeout=10)
            server.log.close()
        self.started.clear()


def _signal_group(server: Server, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signum)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the block as an error (exit 1) instead of killing us outright, so `finally` and `with`
    blocks inside it still stop the servers."""

    def on_term(_signum: int, _frame: Any) -> None:
        sys.exit(1)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- wrk ----------------------------------------------------------------------------------------------

_REQUESTS = re.compile(r"(\d+) requests in")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_P50 = re.compile(r"^\s*50%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_FAILURES = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")
_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkRun:
    seconds: float  # the length asked for (-d)
    requests: int
    rps: float  # wrk's Requests/sec: the requests over the run's real length, about 0.1 s over `seconds`
    p50_ms: float  # NaN when wrk printed no latency distribution
    non_2xx: int
    failures: str | None  # wrk's first line about non-2xx answers or socket errors, if any
    cpu_seconds: float  # of the process watched during the run (`cpu_of`); 0 when none was

    @property
    def per_second(self) -> float:
        """The requests over the length asked for: the req/s bench_transport.py and bench_exchange.py have
        always reported (at -d1s some 10% above wrk's own figure, at -d5s some 2%), kept comparable."""
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """CPU time of the watched process per request served, in µs."""
        return self.cpu_seconds / max(self.requests, 1) * 1e6


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cpu_of: Server | None = None,
    strict: bool = False,
) -> WrkRun:
    """One `wrk -t1` run; `timeout` is wrk's per-request one (its default is 2 s). `strict` makes a run
    with failed requests an error, for benchmarks whose figures would otherwise measure the failures."""
    command = ["wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    if timeout is not None:
        command += ["--timeout", f"{timeout:g}s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    before = cpu_of.cpu_seconds() if cpu_of else 0.0
    out = subprocess.run(
        [*command, url], check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    cpu = cpu_of.cpu_seconds() - before if cpu_of else 0.0
    run = parse_wrk(out, seconds, cpu)
    if strict and run.failures:
        raise RuntimeError(f"wrk saw failures against {url}:\n{out}")
    if strict and math.isnan(run.p50_ms):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return run


def parse_wrk(out: str, seconds: float, cpu_seconds: float = 0.0) -> WrkRun:
    requests, rps = _REQUESTS.search(out), _RPS.search(out)
    if requests is None or rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    p50, non_2xx, failures = _P50.search(out), _NON_2XX.search(out), _FAILURES.search(out)
    return WrkRun(
        seconds=seconds,
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50_ms=float(p50.group(1)) * _MS[p50.group(2)] if p50 else math.nan,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        failures=failures.group(0) if failures else None,
        cpu_seconds=cpu_seconds,
    )


def write_json(path: Path | None, data: object) -> None:
    """The figures for a later comparison, when --json asked for them."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
