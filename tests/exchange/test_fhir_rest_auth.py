"""The adapter's authentication to a member's own server: a static bearer token, and SMART Backend Services
(client_credentials with a private_key_jwt assertion) against a token endpoint that checks the assertion."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
from joserfc import jwt
from joserfc.jwk import RSAKey

from rzcp.exchange.adapters import AuthKind, Member, MemberAdapter, MemberAuth, ProblemCode, SearchQuery
from tests.exchange.servers import ScriptedMember, searchset

KEY = RSAKey.generate_key(2048, parameters={"kid": "region-key-1"}, private=True)
PUBLIC = RSAKey.import_key(KEY.as_dict(private=False))
OBSERVATION = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}


class TokenServer:
    """A member's authorization server and FHIR API in one: tokens for a valid assertion only."""

    def __init__(self, base: str) -> None:
        self.token_url = f"{base}/auth/token"
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.assertions: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        hit = request["hit"]
        if hit.path == "/auth/token":
            form = {k: v[0] for k, v in parse_qs(hit.body.decode()).items()}
            assert form["grant_type"] == "client_credentials"
            assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            token = jwt.decode(form["client_assertion"], PUBLIC, algorithms=["RS384"])
            self.assertions.append({"header": token.header, "claims": token.claims, "scope": form["scope"]})
            value = f"tok-{len(self.issued) + 1}"
            self.issued.append(value)
            body = {"access_token": value, "token_type": "bearer", "expires_in": 600, "scope": form["scope"]}
            return 200, {}, orjson.dumps(body)
        given = hit.headers.get("authorization", "").removeprefix("Bearer ")
        if given not in self.issued or given in self.revoked:
            return 401, {}, b'{"resourceType":"OperationOutcome","issue":[]}'
        return 200, {}, searchset(OBSERVATION)


async def test_static_bearer_token_is_sent(
    adapter: MemberAdapter, scripted: tuple[ScriptedMember, Member]
) -> None:
    server, member = scripted

    async def needs_token(request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if request["hit"].headers.get("authorization") != "Bearer member-secret":
            return 401, {}, b"{}"
        return 200, {}, searchset(OBSERVATION)

    server.handler = needs_token
    with_token = Member(
        member.ura,
        member.name,
        member.category,
        member.base_url,
        auth=MemberAuth(AuthKind.BEARER, token="member-secret"),
    )
    outcome = await adapter.search(with_token, SearchQuery("Observation", "p1"))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    outcome = await adapter.search(member, SearchQuery("Observation", "p1"))
    assert outcome.failed and [p.code for p in outcome.problems] == [ProblemCode.AUTH_FAILED]


async def test_smart_backend_services_token_is_fetched_cached_and_renewed(
    adapter: MemberAdapter, scripted: tuple[ScriptedMember, Member]
) -> None:
    server, member = scripted
    base = member.base_url.removesuffix("/fhir")
    tokens = TokenServer(base)
    server.handler = tokens
    smart = Member(
        member.ura,
        member.name,
        member.category,
        member.base_url,
        auth=MemberAuth(
            AuthKind.SMART,
            token_url=tokens.token_url,
            client_id="rzcp-region",
            private_key=KEY.as_pem(private=True).decode(),
            key_id="region-key-1",
            algorithm="RS384",
            scope="system/Observation.rs",
        ),
    )
    for _ in range(3):
        outcome = await adapter.search(smart, SearchQuery("Observation", "p1"))
        assert [r["id"] for r in outcome.resources] == ["o1"]
    assert tokens.issued == ["tok-1"]  # fetched once, then cached
    first = tokens.assertions[0]
    assert first["header"]["alg"] == "RS384" and first["header"]["kid"] == "region-key-1"
    claims = first["claims"]
    assert claims["iss"] == claims["sub"] == "rzcp-region"
    assert claims["aud"] == tokens.token_url
    assert 0 < claims["exp"] - claims["iat"] <= 300 and claims["jti"]
    assert first["scope"] == "system/Observation.rs"

    credentials = adapter.credentials  # type: ignore[attr-defined]
    credentials.clock = lambda: 10**9  # long past the token's renewal time
    outcome = await adapter.search(smart, SearchQuery("Observation", "p1"))
    assert not outcome.failed and tokens.issued == ["tok-1", "tok-2"]
    assert tokens.assertions[0]["claims"]["jti"] != tokens.assertions[1]["claims"]["jti"]

    tokens.revoked.add("tok-2")  # the member forgot it: one 401, a fresh token, the call succeeds
    outcome = await adapter.search(smart, SearchQuery("Observation", "p1"))
    assert [r["id"] for r in outcome.resources] == ["o1"] and tokens.issued[-1] == "tok-3"


async def test_a_token_endpoint_that_refuses_is_reported(
    adapter: MemberAdapter, scripted: tuple[ScriptedMember, Member]
) -> None:
    server, member = scripted

    async def refuse(_request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return 400, {}, b'{"error":"invalid_client"}'

    server.handler = refuse
    smart = Member(
        member.ura,
        member.name,
        member.category,
        member.base_url,
        auth=MemberAuth(
            AuthKind.SMART,
            token_url=member.base_url.removesuffix("/fhir") + "/auth/token",
            client_id="rzcp-region",
            private_key=KEY.as_pem(private=True).decode(),
        ),
    )
    outcome = await adapter.search(smart, SearchQuery("Observation", "p1"))
    assert outcome.failed
    assert [(p.code, p.detail) for p in outcome.problems] == [
        (ProblemCode.AUTH_FAILED, "token endpoint answered 400")
    ]
