"""Fixtures of the exchange tests: a scripted member on a loopback port, and a fresh FHIR REST adapter
(own HTTP client, own breakers) per test, found through the `rzcp.adapters` entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from rzcp.exchange.adapters import AdapterContext, AdapterRegistry, Member, MemberAdapter
from rzcp.exchange.breaker import BreakerBoard
from rzcp.exchange.http import build_http_client
from rzcp.exchange.limits import ResponseLimits, RetryPolicy
from tests.exchange.servers import ScriptedMember, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[tuple[ScriptedMember, str]]:
    member = ScriptedMember()
    with serve(member) as base:
        yield member, base


@pytest.fixture
def scripted(scripted_server: tuple[ScriptedMember, str]) -> tuple[ScriptedMember, Member]:
    """The scripted member, reset, and the descriptor the adapter calls it by."""
    server, base = scripted_server
    server.handler = None
    server.hits.clear()
    return server, Member("00000001", "Scripted", "Z3", f"{base}/fhir", timeout=2.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limits() -> ResponseLimits:
    return ResponseLimits(max_bytes=64 * 1024, max_entries=50, max_pages=3)


@pytest_asyncio.fixture(loop_scope="session")
async def context(clock: FakeClock, limits: ResponseLimits) -> AsyncIterator[AdapterContext]:
    http = build_http_client()
    try:
        yield AdapterContext(
            http=http,
            limits=limits,
            retry=RetryPolicy(retries=2, backoff=0.01, max_backoff=0.05),
            breakers=BreakerBoard(failure_threshold=3, cool_down=30.0, clock=clock),
        )
    finally:
        await http.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def adapter(context: AdapterContext) -> AsyncIterator[MemberAdapter]:
    registry = AdapterRegistry(context)
    yield registry.get("fhir-rest")
    await registry.aclose()


def patient_of(resource: dict[str, Any]) -> str | None:
    for element in ("subject", "patient"):
        ref = (resource.get(element) or {}).get("reference")
        if ref:
            return ref.split("/")[-1]
    return None
