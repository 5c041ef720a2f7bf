"""Real HTTP servers on loopback ports for the exchange tests: any ASGI app under uvicorn in a thread, and
a scripted member whose misbehaviour each test chooses."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

FHIR = "application/fhir+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run `app` on 127.0.0.1 in a thread; yields its base URL; stops it (bounded) on exit.

    The socket is bound here and handed to uvicorn, so no other server can take the port in between."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported below: why the server did not start
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server on port {port} did not start: {failure!r}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


Handler = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, str], bytes]]]


@dataclass
class Hit:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedMember:
    """An ASGI app answering every request with what `handler` says, recording each request in `hits`."""

    handler: Handler | None = None
    hits: list[Hit] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        hit = Hit(scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body)
        self.hits.append(hit)
        status, extra, payload = await (self.handler or _not_found)({"hit": hit, "n": len(self.hits)})
        out = [(b"content-type", FHIR.encode()), (b"content-length", str(len(payload)).encode())]
        out += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})


async def _not_found(_request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 404, {}, b'{"resourceType":"OperationOutcome","issue":[]}'


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> bytes:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return orjson.dumps(bundle)


def answer(body: bytes, status: int = 200, **headers: str) -> Handler:
    async def handler(_request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return status, headers, body

    return handler


def slow(seconds: float, body: bytes) -> Handler:
    async def handler(_request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        await asyncio.sleep(seconds)
        return 200, {}, body

    return handler
