"""Bearer tokens at the FHIR API: what gets a 401 (with WWW-Authenticate), what a 403, and that a
revocation or suspension holds from the very next request."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from sqlalchemy import text

from rzcp.auth import registry
from tests.conftest import BASE, FHIR, PRACTITIONER, fetch_token, gateway_client, new_key, register_system

CONTEXT = {"X-Purpose-Of-Use": "TREAT", "X-Acting-Practitioner": PRACTITIONER}
PATIENT = {"resourceType": "Patient", "name": [{"family": "Access"}]}
#: A member system's Patient search names the patient (it does not list the region's patients).
NAMED = "/fhir/Patient?_id=someone"


def assert_outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


def assert_401(response: httpx.Response, error: str = "invalid_token") -> None:
    assert_outcome(response, 401, "login")
    assert response.headers["www-authenticate"].startswith('Bearer realm="rzcp"')
    assert f'error="{error}"' in response.headers["www-authenticate"]


async def token_for(app: Any, scope: str, role: str = "member", registered: str | None = None) -> str:
    system = await register_system(app, scope=registered or scope, role=role)
    async with gateway_client(app) as http:
        return await fetch_token(http, system, scope)


async def get(app: Any, path: str, token: str | None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with gateway_client(app, **CONTEXT, **auth, **headers) as http:
        return await http.get(path)


async def test_no_token(app: Any) -> None:
    assert_401(await get(app, "/fhir/Patient", None), "invalid_request")
    assert_401(await get(app, "/fhir/Patient", None, Authorization="Basic dXNlcjpwdw=="), "invalid_request")


async def test_garbage_token(app: Any) -> None:
    for garbage in ("garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 9000):
        assert_401(await get(app, "/fhir/Patient", garbage))


async def test_expired_token(app: Any) -> None:
    runtime = app.state.runtime
    claims = {"kind": "system", "sub": "x", "client_id": "x", "role": "admin", "scope": "system/*.cruds"}
    token, _ = await runtime.auth.tokens.issue(
        claims, issuer=f"{BASE}/auth", audience=f"{BASE}/fhir", now=int(time.time()) - 3600
    )
    response = await get(app, "/fhir/Patient", token)
    assert_401(response)
    assert "expired" in response.headers["www-authenticate"]


async def test_token_signed_by_another_key(app: Any) -> None:
    runtime = app.state.runtime
    real = await runtime.auth.keys.signing_key()
    other = new_key()
    now = int(time.time())
    claims = {
        "kind": "system", "sub": "x", "client_id": "x", "role": "admin", "scope": "system/*.cruds",
        "iss": f"{BASE}/auth", "aud": f"{BASE}/fhir", "iat": now, "exp": now + 60, "jti": "j",
    }  # fmt: skip
    forged_same_kid = jwt.encode({"alg": "RS384", "kid": real.kid}, claims, other, algorithms=["RS384"])
    assert_401(await get(app, "/fhir/Patient", forged_same_kid))
    forged_own_kid = jwt.encode({"alg": "RS384", "kid": other.kid}, claims, other, algorithms=["RS384"])
    assert_401(await get(app, "/fhir/Patient", forged_own_kid))


async def test_token_for_another_audience(app: Any) -> None:
    runtime = app.state.runtime
    claims = {"kind": "system", "sub": "x", "client_id": "x", "role": "admin", "scope": "system/*.cruds"}
    token, _ = await runtime.auth.tokens.issue(
        claims, issuer=f"{BASE}/auth", audience="https://other-region.example/fhir"
    )
    assert_401(await get(app, "/fhir/Patient", token))
    # A real token of this gateway, presented at another host name, is not for that audience either.
    good = await token_for(app, "system/Patient.rs")
    async with gateway_client(app, **CONTEXT, Authorization=f"Bearer {good}") as http:
        http.base_url = httpx.URL("http://elsewhere.test")
        assert_401(await http.get("/fhir/Patient"))


async def test_token_used_after_its_client_was_revoked(app: Any) -> None:
    system = await register_system(app, scope="system/Patient.rs")
    async with gateway_client(app) as http:
        token = await fetch_token(http, system, "system/Patient.rs")
    assert (await get(app, NAMED, token)).status_code == 200
    async with app.state.runtime.db.write() as conn:
        await registry.revoke_client(conn, system.client_id)
    assert_401(await get(app, NAMED, token))


async def test_token_used_after_its_member_was_suspended(app: Any) -> None:
    system = await register_system(app, scope="system/Patient.cruds", role="admin")  # an admin may write
    async with gateway_client(app) as http:
        token = await fetch_token(http, system, "system/Patient.cruds")
    async with app.state.runtime.db.write() as conn:
        await registry.suspend_member(conn, system.member_ura)
    assert_401(await get(app, "/fhir/Patient", token))
    async with gateway_client(app, **CONTEXT, Authorization=f"Bearer {token}") as http:
        assert_401(await http.post("/fhir/Patient", json=PATIENT, headers={"Content-Type": FHIR}))


async def test_a_token_from_before_a_suspension_stays_refused_after_reinstatement(app: Any) -> None:
    """A privacy officer's walkthrough: suspended (a security incident), then reinstated, the member's old
    token worked again. Only tokens issued after the reinstatement do."""
    system = await register_system(app, scope="system/Patient.cruds", role="admin")
    async with gateway_client(app) as http:
        old = await fetch_token(http, system, "system/Patient.cruds")
    async with gateway_client(app, **CONTEXT, Authorization=f"Bearer {old}") as http:
        created = (await http.post("/fhir/Patient", json=PATIENT, headers={"Content-Type": FHIR})).json()
    async with app.state.runtime.db.write() as conn:
        await registry.suspend_member(conn, system.member_ura)
    async with app.state.runtime.db.write() as conn:
        await registry.reinstate_member(conn, system.member_ura)
    for path in ("/fhir/Patient", f"/fhir/Patient/{created['id']}", "/fhir/Patient/nope"):
        assert_401(await get(app, path, old))
    async with gateway_client(app) as http:  # the same second: told apart to the millisecond
        new = await fetch_token(http, system, "system/Patient.cruds")
    assert (await get(app, f"/fhir/Patient/{created['id']}", new)).status_code == 200
    assert (await get(app, "/fhir/Patient", new)).status_code == 200


async def test_read_by_id_after_revocation_or_suspension(app: Any) -> None:
    """The read folds the liveness check into its own SELECT: it must hold for found, deleted and
    unknown ids alike (a 401, never a 200, 404 or 410), and for a suspended member too."""
    system = await register_system(app, scope="system/Patient.cruds", role="admin")  # an admin may write
    async with gateway_client(app) as http:
        token = await fetch_token(http, system, "system/Patient.cruds")
    async with gateway_client(app, **CONTEXT, Authorization=f"Bearer {token}") as http:
        created = await http.post("/fhir/Patient", json=PATIENT, headers={"Content-Type": FHIR})
        gone = await http.post("/fhir/Patient", json=PATIENT, headers={"Content-Type": FHIR})
        assert (await http.delete(f"/fhir/Patient/{gone.json()['id']}")).status_code == 204
    paths = [
        f"/fhir/Patient/{created.json()['id']}",
        f"/fhir/Patient/{gone.json()['id']}",
        "/fhir/Patient/nope",
    ]
    assert [(await get(app, path, token)).status_code for path in paths] == [200, 410, 404]
    async with app.state.runtime.db.write() as conn:
        await registry.revoke_client(conn, system.client_id)
    for path in paths:
        assert_401(await get(app, path, token))

    other = await register_system(app, scope="system/Patient.rs")
    async with gateway_client(app) as http:
        token = await fetch_token(http, other, "system/Patient.rs")
    assert (await get(app, paths[0], token)).status_code == 200
    async with app.state.runtime.db.write() as conn:
        await registry.suspend_member(conn, other.member_ura)
    for path in paths:
        assert_401(await get(app, path, token))


async def test_scope_for_another_resource_type(app: Any) -> None:
    token = await token_for(app, "system/Observation.rs")
    assert (await get(app, "/fhir/Observation", token)).status_code == 200
    assert_outcome(await get(app, "/fhir/Patient", token), 403, "forbidden")
    assert_outcome(await get(app, "/fhir/Patient/any-id", token), 403, "forbidden")


async def test_write_with_a_read_scope(app: Any) -> None:
    token = await token_for(app, "system/Patient.read")
    async with gateway_client(app, **CONTEXT, Authorization=f"Bearer {token}") as http:
        created = await http.post("/fhir/Patient", json=PATIENT, headers={"Content-Type": FHIR})
        assert_outcome(created, 403, "forbidden")
        assert_outcome(await http.put("/fhir/Patient/x", json={**PATIENT, "id": "x"}), 403, "forbidden")
        assert_outcome(await http.delete("/fhir/Patient/x"), 403, "forbidden")
        assert (await http.get(NAMED)).status_code == 200


@pytest.mark.parametrize(
    ("scope", "allowed", "denied"),
    [
        ("system/Patient.rs", [f"GET {NAMED}"], ["POST /fhir/Patient", "GET /fhir/Patient/_history"]),
        ("system/Patient.r", [], [f"GET {NAMED}", "GET /fhir/Patient/_history"]),
        ("system/*.s", ["GET /fhir/Observation", "GET /fhir/Organization"], ["DELETE /fhir/Organization/x"]),
    ],
)
async def test_v2_permission_letters(app: Any, scope: str, allowed: list[str], denied: list[str]) -> None:
    token = await token_for(app, scope)
    async with gateway_client(app, **CONTEXT, Authorization=f"Bearer {token}") as http:
        for call in allowed:
            method, path = call.split()
            assert (await http.request(method, path)).status_code == 200, call
        for call in denied:
            method, path = call.split()
            assert_outcome(await http.request(method, path), 403, "forbidden")


async def test_request_context_headers(app: Any) -> None:
    token = await token_for(app, "system/Patient.rs")
    auth = {"Authorization": f"Bearer {token}"}
    async with gateway_client(app, **auth) as http:
        missing = await http.get(NAMED, headers={"X-Purpose-Of-Use": "TREAT"})
        assert_outcome(missing, 400, "required")
        assert "X-Acting-Practitioner" in missing.json()["issue"][0]["diagnostics"]
        malformed = await http.get(NAMED, headers={"X-Acting-Practitioner": "no-bar"})
        assert_outcome(malformed, 400, "value")
        # The trail must name a person someone can find: a register's number, or the organisation's OID.
        for nobody in (
            "x|1",
            "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|dr. Jansen",
            "urn:oid:abc|1",
            "urn:oid:2.16.528.1.1007.99|emp-7, emp-8",  # two headers folded into one
        ):
            refused = await http.get(NAMED, headers={"X-Acting-Practitioner": nobody})
            assert_outcome(refused, 400, "value")
        for somebody in (
            "http://fhir.nl/fhir/NamingSystem/big|19012345601",
            "urn:oid:2.16.528.1.1007.99|emp-7",
        ):
            found = await http.get(NAMED, headers={"X-Acting-Practitioner": somebody})
            assert found.status_code == 200, (somebody, found.text)
        ok = await http.get(NAMED, headers={"X-Acting-Practitioner": PRACTITIONER})
        assert ok.status_code == 200  # TREAT by default
        unknown = await http.get(
            NAMED, headers={"X-Acting-Practitioner": PRACTITIONER, "X-Purpose-Of-Use": "SHOPPING"}
        )
        assert_outcome(unknown, 400, "value")
        not_allowed = await http.get(
            NAMED, headers={"X-Acting-Practitioner": PRACTITIONER, "X-Purpose-Of-Use": "HMARKT"}
        )
        assert_outcome(not_allowed, 403, "forbidden")
        glass = await http.get(
            NAMED,
            headers={
                "X-Acting-Practitioner": PRACTITIONER,
                "X-Purpose-Of-Use": "ETREAT",
                "X-Break-Glass-Reason": "unconscious at the emergency department",
            },
        )
        assert_outcome(glass, 403, "forbidden")  # break-the-glass is off unless the region enables it
        # two practitioners (or purposes): which one acted? Refused, not the first taken
        for name, values in (
            ("X-Acting-Practitioner", (PRACTITIONER, "http://fhir.nl/fhir/NamingSystem/big|19012345601")),
            ("X-Purpose-Of-Use", ("TREAT", "TREAT")),
        ):
            twice = [(name, value) for value in values]
            if name != "X-Acting-Practitioner":
                twice.append(("X-Acting-Practitioner", PRACTITIONER))
            refused = await http.get(NAMED, headers=twice)
            assert_outcome(refused, 400, "value")
            assert "more than once" in refused.json()["issue"][0]["diagnostics"]
        # found by a probe: an empty purpose was taken as TREAT, and of two tokens the first was used
        empty = await http.get(
            NAMED, headers={"X-Acting-Practitioner": PRACTITIONER, "X-Purpose-Of-Use": " "}
        )
        assert_outcome(empty, 400, "value")
        assert "empty" in empty.json()["issue"][0]["diagnostics"]
    other = await token_for(app, "system/Patient.rs")
    async with gateway_client(app) as http:
        two = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {other}")]
        refused = await http.get(NAMED, headers=[*two, ("X-Acting-Practitioner", PRACTITIONER)])
        assert_outcome(refused, 401, "login")


async def test_a_request_refused_for_its_context_is_recorded_as_the_callers(app: Any) -> None:
    """The token was good; the purpose or the practitioner was not. The trail names the system and its
    member all the same (NEN 7513: who tried), with the purpose as asked, never one it did not ask for: a
    refused break-the-glass attempt is an emergency record an auditor finds."""
    system = await register_system(app, scope="system/Patient.rs")
    async with gateway_client(app) as http:
        token = await fetch_token(http, system, "system/Patient.rs")
    glass = {"X-Purpose-Of-Use": "ETREAT", "X-Break-Glass-Reason": "unconscious"}
    refusals = [  # (headers, the purpose recorded)
        ({"X-Acting-Practitioner": PRACTITIONER, "X-Purpose-Of-Use": "SHOPPING"}, None),
        ({"X-Acting-Practitioner": PRACTITIONER, "X-Purpose-Of-Use": "HMARKT"}, "HMARKT"),
        ({"X-Acting-Practitioner": PRACTITIONER, **glass}, "ETREAT"),
        ({"X-Acting-Practitioner": "no-bar"}, "TREAT"),
    ]
    async with gateway_client(app, Authorization=f"Bearer {token}") as http:
        for headers, _ in refusals:
            assert (await http.get(NAMED, headers=headers)).status_code in (400, 403)
    async with app.state.runtime.db.read() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT member_ura, outcome, purpose, emergency FROM audit_events "
                    "WHERE client_id = :c AND outcome <> '0' ORDER BY seq"
                ),
                {"c": system.client_id},
            )
        ).all()
    assert {row.member_ura for row in rows} == {system.member_ura}
    assert [row.purpose or None for row in rows] == [purpose for _, purpose in refusals]
    assert [row.emergency for row in rows] == [False, False, True, False]


async def test_an_emergency_reason_is_kept_as_written_without_a_bsn_however_spelled(app: Any) -> None:
    """The reason arrives as UTF-8 ("patiënt" read as "patiÃ«nt" in the patient's log: a patient's
    walkthrough), and a BSN in it is masked in the groups people write it in, not only as nine digits in a
    row (a security test found `999.911.120` kept in clear)."""
    system = await register_system(app, scope="system/Patient.rs")
    async with gateway_client(app) as http:
        token = await fetch_token(http, system, "system/Patient.rs")
    spellings = [
        "999.911.120",
        "999 911 120",
        "999-911-120",
        "0999911120",
        "9 9 9 9 1 1 1 2 0",
        "".join(chr(0xFF10 + int(d)) for d in "999911120"),  # full-width digits
    ]
    async with gateway_client(app, Authorization=f"Bearer {token}") as http:
        for spelled in spellings:
            reason = f"patiënt bewusteloos — bsn {spelled}, om 14:30"
            headers = [
                ("X-Acting-Practitioner", PRACTITIONER),
                ("X-Purpose-Of-Use", "ETREAT"),
                ("X-Break-Glass-Reason", reason.encode()),
            ]
            assert (await http.get(NAMED, headers=headers)).status_code == 403  # the rule is off
        latin = [("X-Acting-Practitioner", PRACTITIONER), ("X-Purpose-Of-Use", "ETREAT")]
        not_utf8 = await http.get(NAMED, headers=[*latin, ("X-Break-Glass-Reason", b"pati\xebnt in coma")])
        assert not_utf8.status_code == 403  # read as the Latin-1 it is, not refused for it
    async with app.state.runtime.db.read() as conn:
        contents = (
            (
                await conn.execute(
                    text("SELECT content FROM audit_events WHERE client_id = :c AND emergency ORDER BY seq"),
                    {"c": system.client_id},
                )
            )
            .scalars()
            .all()
        )
    kept = [c for c in contents if "bewusteloos" in c]
    assert len(kept) == len(spellings)
    assert any("patiënt in coma" in str(orjson.loads(c)) for c in contents)
    for content in kept:
        record = str(orjson.loads(content))
        assert "patiënt bewusteloos — bsn *, om 14:30" in record, record
        assert not any(spelled in record for spelled in spellings) and "999911120" not in record


async def test_auditor_role_reads_the_audit_trail_only(app: Any) -> None:
    token = await token_for(app, "system/*.rs", role="auditor")
    assert (await get(app, "/fhir/AuditEvent", token)).status_code == 200
    assert_outcome(await get(app, "/fhir/Patient", token), 403, "forbidden")
    member = await token_for(app, "system/*.rs", role="member")
    assert_outcome(await get(app, "/fhir/AuditEvent", member), 403, "forbidden")


async def test_metadata_and_discovery_need_no_token(app: Any, anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/fhir/metadata")).status_code == 200
    config = (await anonymous.get("/fhir/.well-known/smart-configuration")).json()
    assert config["token_endpoint"] == f"{BASE}/auth/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "client-confidential-asymmetric" in config["capabilities"]
    # the least scopes the README advises a member system are advertised, not only the broad ones
    assert {"system/*.rs", "system/Patient.c", "system/Bundle.c"} <= set(config["scopes_supported"])
    jwks = (await anonymous.get("/auth/jwks")).json()
    assert all("d" not in key for key in jwks["keys"])
    statement = (await anonymous.get("/fhir/metadata")).json()
    security = statement["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == f"{BASE}/auth/token"
    assert uris["authorize"] == f"{BASE}/auth/authorize"
