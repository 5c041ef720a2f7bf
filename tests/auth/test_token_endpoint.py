"""Attacks on the token endpoint (SMART Backend Services), each sent to a running gateway, each with its
exact answer: RFC 6749 JSON, status 400, `Cache-Control: no-store`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from rzcp.auth import client_keys, registry, tables
from tests.conftest import TOKEN_URL, SystemClient, new_key, register_system


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signature)


def claims_for(system: SystemClient) -> dict[str, Any]:
    return {
        "iss": system.client_id,
        "sub": system.client_id,
        "aud": TOKEN_URL,
        "exp": int(time.time()) + 240,
        "jti": uuid.uuid4().hex,
    }


async def refused(
    http: httpx.AsyncClient,
    form: dict[str, str] | None,
    error: str,
    *,
    content: bytes | None = None,
    **kw: Any,
) -> dict[str, Any]:
    if content is not None:
        response = await http.post("/auth/token", content=content, **kw)
    else:
        response = await http.post("/auth/token", data=form)
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert body["error_description"]
    return body


@pytest.fixture
async def system(app: Any) -> SystemClient:
    return await register_system(app, scope="system/Patient.rs system/Observation.read")


async def test_happy_path_rs384(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    response = await anonymous.post("/auth/token", data=system.form("system/Patient.read"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Patient.read"


async def test_es384_is_accepted(app: Any, anonymous: httpx.AsyncClient) -> None:
    system = await register_system(app, scope="system/Patient.rs", alg="ES384")
    response = await anonymous.post("/auth/token", data=system.form("system/Patient.rs"))
    assert response.status_code == 200, response.text


async def test_scopes_are_narrowed_to_the_registration(
    anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    response = await anonymous.post("/auth/token", data=system.form("system/*.cruds system/Consent.read"))
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"system/Patient.rs", "system/Observation.rs"}


async def test_grant_type_missing_or_wrong(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    form = system.form()
    del form["grant_type"]
    await refused(anonymous, form, "invalid_request")
    await refused(anonymous, {**system.form(), "grant_type": "password"}, "unsupported_grant_type")


async def test_client_assertion_type_missing_or_wrong(
    anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    form = system.form()
    del form["client_assertion_type"]
    await refused(anonymous, form, "invalid_request")
    wrong = {
        **system.form(),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    }
    await refused(anonymous, wrong, "invalid_request")


async def test_scope_missing_unknown_or_not_registered(
    anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    form = system.form()
    del form["scope"]
    await refused(anonymous, form, "invalid_scope")
    await refused(anonymous, system.form("system/Patient.frobnicate"), "invalid_scope")
    await refused(anonymous, system.form("system/Consent.read"), "invalid_scope")
    await refused(anonymous, system.form("patient/Patient.read"), "invalid_scope")


async def test_assertion_signed_with_an_unregistered_key(
    anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    other = new_key()
    impostor = SystemClient(system.client_id, system.member_ura, other)
    # The same kid as the registered key, a different key pair.
    forged = impostor.assertion(header={"kid": system.key.kid})
    form = {**system.form(), "client_assertion": forged}
    body = await refused(anonymous, form, "invalid_client")
    assert "signature" in body["error_description"]
    await refused(anonymous, impostor.form(), "invalid_client")  # its own kid: not registered


async def test_alg_none(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    token = unsigned_jwt({"alg": "none", "kid": system.key.kid}, claims_for(system))
    body = await refused(anonymous, {**system.form(), "client_assertion": token}, "invalid_client")
    assert "alg" in body["error_description"]


async def test_hs256_with_the_public_key_as_secret(
    anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    secret = system.key.as_pem(private=False)
    header = {"alg": "HS256", "kid": system.key.kid, "typ": "JWT"}
    signing_input = (
        _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims_for(system)).encode())
    ).encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    token = signing_input.decode() + "." + _b64(signature)
    await refused(anonymous, {**system.form(), "client_assertion": token}, "invalid_client")


async def test_unlisted_algorithm(app: Any, anonymous: httpx.AsyncClient) -> None:
    system = await register_system(app, scope="system/Patient.rs")
    body = await refused(anonymous, system.form(header={"alg": "RS256"}), "invalid_client")
    assert "RS384 or ES384" in body["error_description"]


async def test_wrong_audience(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    await refused(anonymous, system.form(aud="https://other.example/auth/token"), "invalid_client")
    await refused(anonymous, system.form(aud=None), "invalid_client")


async def test_iss_differs_from_sub(app: Any, anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    other = await register_system(app)
    await refused(anonymous, system.form(sub=other.client_id), "invalid_client")


async def test_unknown_client(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    await refused(anonymous, system.form(iss="ehr-unknown", sub="ehr-unknown"), "invalid_client")


async def test_revoked_client_and_suspended_member(app: Any, anonymous: httpx.AsyncClient) -> None:
    revoked = await register_system(app)
    suspended = await register_system(app)
    async with app.state.runtime.db.write() as conn:
        await registry.revoke_client(conn, revoked.client_id)
        await registry.suspend_member(conn, suspended.member_ura)
    await refused(anonymous, revoked.form(), "invalid_client")
    await refused(anonymous, suspended.form(), "invalid_client")


async def test_exp_missing_past_or_too_far(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    now = int(time.time())
    await refused(anonymous, system.form(exp=None), "invalid_client")
    await refused(anonymous, system.form(exp=now - 60), "invalid_client")
    body = await refused(anonymous, system.form(exp=now + 600), "invalid_client")
    assert "300 seconds" in body["error_description"]


async def test_an_assertion_dated_in_the_future_is_refused(
    anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    """An integrator's walkthrough had one accepted with iat an hour ahead (a clock that is off)."""
    now = int(time.time())
    body = await refused(anonymous, system.form(iat=now + 3600), "invalid_client")
    assert "iat is in the future" in body["error_description"]
    body = await refused(anonymous, system.form(nbf=now + 3600), "invalid_client")
    assert "not valid yet" in body["error_description"]
    ok = await anonymous.post("/auth/token", data=system.form(iat=now + 5, nbf=now - 5))  # within the skew
    assert ok.status_code == 200, ok.text


async def test_jti_replayed_inside_the_window(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    form = system.form("system/Patient.rs")
    first = await anonymous.post("/auth/token", data=form)
    assert first.status_code == 200
    body = await refused(anonymous, form, "invalid_client")
    assert "jti" in body["error_description"]
    same_jti = system.form(
        "system/Patient.rs",
        jti=json.loads(base64.urlsafe_b64decode(form["client_assertion"].split(".")[1] + "=="))["jti"],
    )
    await refused(anonymous, same_jti, "invalid_client")  # a new assertion, the same jti
    missing = system.form(jti=None)
    await refused(anonymous, missing, "invalid_client")


async def test_jku_and_other_key_headers_are_refused_and_never_fetched(
    app: Any, anonymous: httpx.AsyncClient, system: SystemClient
) -> None:
    fetched: list[str] = []
    runtime = app.state.runtime
    original = runtime.auth.client_keys._http
    runtime.auth.client_keys._http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: fetched.append(str(r.url)) or httpx.Response(500))
    )
    try:
        for header in ({"jku": "https://evil.example/jwks"}, {"x5u": "https://evil.example/cert"}):
            body = await refused(anonymous, system.form(header=header), "invalid_client")
            assert next(iter(header)) in body["error_description"]
        jwk = system.key.as_dict(private=False)
        await refused(anonymous, system.form(header={"jwk": jwk}), "invalid_client")
    finally:
        runtime.auth.client_keys._http = original
    assert fetched == []


async def test_body_that_is_not_form_encoded(anonymous: httpx.AsyncClient, system: SystemClient) -> None:
    await refused(
        anonymous,
        None,
        "invalid_request",
        content=json.dumps(system.form()).encode(),
        headers={"Content-Type": "application/json"},
    )
    duplicated = "grant_type=client_credentials&grant_type=client_credentials"
    await refused(
        anonymous,
        None,
        "invalid_request",
        content=duplicated.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_keys_from_an_allow_listed_jwks_url_are_fetched_cached_and_refetched_on_a_new_kid(
    app: Any, anonymous: httpx.AsyncClient
) -> None:
    runtime = app.state.runtime
    served: dict[str, Any] = {"keys": []}
    calls: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        return httpx.Response(200, json=served)

    url = "https://keys.member.example/jwks"
    system = await register_system(app, scope="system/Patient.rs", jwks_url=url)
    served["keys"] = [system.key.as_dict(private=False)]
    keys = runtime.auth.client_keys
    original_http, original_allowed = keys._http, keys._allowed
    keys._http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    try:
        keys._allowed = frozenset()
        await refused(anonymous, system.form("system/Patient.rs"), "invalid_client")
        assert calls == []  # not on the allow-list: never fetched
        keys._allowed = frozenset({"keys.member.example"})
        for _ in range(2):
            response = await anonymous.post("/auth/token", data=system.form("system/Patient.rs"))
            assert response.status_code == 200, response.text
        assert calls == ["keys.member.example"]  # cached
        rotated = new_key()
        served["keys"] = [rotated.as_dict(private=False)]
        keys._fetched[url] = (0.0, keys._fetched[url][1])  # as if the refetch pause had passed
        system.key = rotated
        response = await anonymous.post("/auth/token", data=system.form("system/Patient.rs"))
        assert response.status_code == 200, response.text
        assert calls == ["keys.member.example"] * 2  # unknown kid: fetched again
    finally:
        keys._http, keys._allowed = original_http, original_allowed


async def test_a_slow_or_huge_jwks_url_costs_one_short_fetch(
    app: Any, anonymous: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a security test: anyone can send assertions naming a client; against a jwks host that
    trickles, each one held a connection of the process's outgoing pool for minutes, and a 100 MB
    document was read whole. Now one fetch per URL at a time, within a deadline, no further than the
    size limit, and its failure is remembered for a few seconds."""
    calls: list[str] = []

    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield b'{"keys": ['
            await asyncio.sleep(60)

    def provider(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/slow":
            return httpx.Response(200, stream=Trickle())
        return httpx.Response(200, content=b" " * (client_keys.MAX_JWKS_BYTES + 1) + b"{}")

    monkeypatch.setattr(client_keys, "FETCH_SECONDS", 0.5)
    keys = app.state.runtime.auth.client_keys
    monkeypatch.setattr(keys, "_http", httpx.AsyncClient(transport=httpx.MockTransport(provider)))
    monkeypatch.setattr(keys, "_allowed", frozenset({"keys.member.example"}))
    slow = await register_system(app, jwks_url=f"https://keys.member.example/slow?{uuid.uuid4().hex}")
    started = time.monotonic()
    answers = await asyncio.gather(*(anonymous.post("/auth/token", data=slow.form()) for _ in range(10)))
    assert time.monotonic() - started < 5
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_client", answer.text
    assert calls == ["/slow"]  # one fetch for the ten
    await refused(anonymous, slow.form(), "invalid_client")
    assert calls == ["/slow"]  # the failure is remembered
    huge = await register_system(app, jwks_url=f"https://keys.member.example/huge?{uuid.uuid4().hex}")
    await refused(anonymous, huge.form(), "invalid_client")
    assert calls == ["/slow", "/huge"]


async def test_keys_that_cannot_be_used_are_an_invalid_client_not_a_500(
    app: Any, anonymous: httpx.AsyncClient
) -> None:
    """Keys stored before registration checked them (a bad RSA exponent): the token endpoint refuses the
    client in words; it does not fail."""
    system = await register_system(app)
    bad = {"keys": [{"kty": "RSA", "n": "abc", "e": "AQAB", "kid": system.key.kid}]}
    async with app.state.runtime.db.write() as conn:
        await conn.execute(
            update(tables.clients)
            .where(tables.clients.c.client_id == system.client_id)
            .values(jwks=json.dumps(bad))
        )
    body = await refused(anonymous, system.form(), "invalid_client")
    assert "keys cannot be used" in body["error_description"]
