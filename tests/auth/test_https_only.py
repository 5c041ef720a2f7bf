"""In production a member's endpoint and a client's jwks URL are https: the gateway sends patient data to the
one and trusts the keys it fetches from the other. Plain http stays for development and for a loopback
address (a sidecar on the same machine that holds the TLS connection). The registry asks for https unless its
caller says it runs in development."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest

from rzcp.auth import registry
from rzcp.errors import BadRequest
from rzcp.exchange.adapters import AuthKind, MemberAuth
from rzcp.exchange.directory import Directory
from rzcp.exchange.secrets import member_secret_box
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.settings import Settings
from tests.conftest import new_key


def _ura() -> str:
    return f"{uuid.uuid4().int % 10**8:08d}"


def test_production_asks_for_https_and_development_does_not() -> None:
    production = Settings(
        environment="production",
        secret_key=secrets.token_urlsafe(48),
        bsn_secret=secrets.token_urlsafe(48),
        metrics_token=secrets.token_urlsafe(48),
        database_url="postgresql+asyncpg://db/rzcp",
        audit_signing_key="k",
        public_base_url="https://gateway.example/fhir",
    )
    assert production.https_only
    assert not Settings().https_only


@pytest.mark.parametrize("endpoint", ["http://ehr.example/fhir", "http://10.1.2.3:8080/fhir"])
async def test_a_member_on_plain_http_is_refused_in_production(app: Any, endpoint: str) -> None:
    ura = _ura()
    async with app.state.runtime.db.write() as conn:
        with pytest.raises(BadRequest, match="plain http"):
            await registry.add_member(conn, ura=ura, name="Huisarts", category="Z3", endpoint=endpoint)
        assert await registry.get_member(conn, ura) is None
        # development keeps plain http (the demo's members); production takes https and loopback
        await registry.add_member(
            conn, ura=ura, name="Huisarts", category="Z3", endpoint=endpoint, https_only=False
        )
        for i, allowed in enumerate(
            ["https://ehr.example/fhir", "http://127.0.0.1:9000/fhir", "http://[::1]/f"]
        ):
            other = await registry.add_member(
                conn, ura=_ura(), name=f"Member {i}", category="Z3", endpoint=allowed, https_only=True
            )
            assert other.endpoint == allowed


async def test_a_jwks_url_on_plain_http_is_refused_in_production(app: Any) -> None:
    ura = _ura()
    async with app.state.runtime.db.write() as conn:
        await registry.add_member(
            conn, ura=ura, name="Apotheek", category="J8", endpoint="https://a.example/f"
        )
        client_id = f"ehr-{uuid.uuid4().hex[:10]}"
        with pytest.raises(BadRequest, match="plain http"):
            await registry.add_client(
                conn,
                client_id=client_id,
                member_ura=ura,
                scope="system/*.rs",
                jwks_url="http://keys.example/jwks.json",
                https_only=True,
            )
        assert await registry.get_client(conn, client_id) is None
        jwks = {"keys": [new_key().as_dict(private=False)]}
        await registry.add_client(
            conn, client_id=client_id, member_ura=ura, scope="system/*.rs", jwks=jwks, https_only=True
        )
        with pytest.raises(BadRequest, match="plain http"):
            await registry.replace_client_keys(
                conn, client_id, jwks_url="http://keys.example/jwks.json", https_only=True
            )
        moved = await registry.replace_client_keys(
            conn, client_id, jwks_url="https://keys.example/jwks.json", https_only=True
        )
        assert moved.jwks_url == "https://keys.example/jwks.json"
        plain = await registry.replace_client_keys(
            conn, client_id, jwks_url="http://keys.example/jwks.json", https_only=False
        )
        assert plain.jwks_url == "http://keys.example/jwks.json"  # development


async def test_a_members_token_endpoint_on_plain_http_is_refused_in_production(app: Any) -> None:
    """SMART Backend Services to the member's own server: the region's signed assertion and the member's
    token travel to its token endpoint."""
    directory = Directory(member_secret_box(Settings().secret_key))
    key = new_key().as_pem(private=True).decode()
    ura = _ura()

    async def register(token_url: str) -> Any:
        """As `rzcp members add` does: one transaction, rolled back when refused."""
        auth = MemberAuth(AuthKind.SMART, token_url=token_url, client_id="rzcp", private_key=key)
        async with app.state.runtime.db.write() as conn:
            return await directory.add_member(
                conn,
                SearchRegistry.default(),
                ura=ura,
                name="Ziekenhuis",
                category="Z3",
                endpoint="https://zh.example/fhir",
                auth=auth,
            )

    with pytest.raises(BadRequest, match=r"token endpoint .* plain http"):
        await register("http://zh.example/token")
    async with app.state.runtime.db.read() as conn:
        assert await registry.get_member(conn, ura) is None  # nothing of the refused member is kept
    member = await register("https://zh.example/token")
    assert member.auth.token_url == "https://zh.example/token"
