"""The gateway's one outgoing HTTP client, against a real member on a loopback port: over its aiohttp
session (the default) and through httpx with another transport handed in, the adapter behaves alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import httpx
import pytest
import pytest_asyncio

from rzcp.exchange.adapters import AdapterContext, AdapterRegistry, Member, MemberAdapter, SearchQuery
from rzcp.exchange.http import USER_AGENT, build_http_client
from tests.exchange.servers import ScriptedMember, answer, searchset

Scripted = tuple[ScriptedMember, Member]


@pytest_asyncio.fixture(loop_scope="session", params=["aiohttp", "httpx-transport"])
async def either(request: pytest.FixtureRequest) -> AsyncIterator[MemberAdapter]:
    """The FHIR REST adapter over the default client, and over one with httpx's own transport."""
    http = build_http_client(None if request.param == "aiohttp" else httpx.AsyncHTTPTransport())
    registry = AdapterRegistry(AdapterContext(http=http))
    try:
        yield registry.get("fhir-rest")
    finally:
        await registry.aclose()
        await http.aclose()


def _obs(res_id: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
    }


async def test_a_search_sends_the_same_request_either_way(either: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    server.handler = answer(searchset(_obs("o1"), _obs("o2")))
    outcome = await either.search(member, SearchQuery("Observation", "p1", (("status", "final"),)))
    assert [r["id"] for r in outcome.resources] == ["o1", "o2"]
    assert not outcome.failed and outcome.problems == []
    hit = server.hits[0]
    sent = parse_qsl(hit.query)
    assert sent[:2] == [("patient", "Patient/p1"), ("status", "final")]
    assert sent[2][0] == "_count" and int(sent[2][1]) > 20  # pages as large as the member allows
    assert hit.headers["accept"] == "application/fhir+json"
    assert hit.headers["user-agent"] == USER_AGENT


async def test_a_members_cookie_never_rides_along_with_a_later_call(
    either: MemberAdapter, scripted: Scripted
) -> None:
    """One client serves every requester: a session cookie one member set for one pull must not be sent
    with the next pull, whoever asks it."""
    server, member = scripted
    server.handler = answer(searchset(), **{"Set-Cookie": "session=abc; Path=/"})
    by_name = Member(
        member.ura, member.name, member.category, member.base_url.replace("127.0.0.1", "localhost")
    )
    for _ in range(2):  # by host name: cookie jars keep no cookies of bare IP addresses
        outcome = await either.search(by_name, SearchQuery("Observation", "p1"))
        assert not outcome.failed
    assert len(server.hits) == 2
    assert "cookie" not in server.hits[1].headers
