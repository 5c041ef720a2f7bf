"""The gateway's own web apps as OAuth clients, and people who hold more than one role.

The console's client is registered at the gateway's own /admin/ and may ask for staff scopes only; an admin
reads the audit trail only when they are an auditor too (issue 8); a patient may read the region's directory
of organisations (to name one in a consent) but change nothing in it.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from rzcp.app import create_app
from rzcp.auth.authorize import s256
from rzcp.settings import Settings
from tests.auth.test_patient_login import new_bsn
from tests.conftest import BASE, FHIR, make_settings

CONSOLE = "rzcp-admin-console"
CONSOLE_REDIRECT = f"{BASE}/admin/"
APP_REDIRECT = f"{BASE}/app/"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def staff_app(app: Any, database_url: str) -> Any:
    settings = make_settings(
        database_url,
        dev_idp=True,
        person_roles={"dev:ann": "admin", "dev:chief": "admin,auditor", "dev:aud": ["auditor"]},
    )
    return create_app(settings)


@pytest_asyncio.fixture(loop_scope="session")
async def browser(staff_app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=staff_app), base_url=BASE) as http:
        yield http


def _params(client_id: str, redirect: str, scope: str, verifier: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": scope,
        "state": uuid.uuid4().hex,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }


async def _login(
    http: httpx.AsyncClient, client_id: str, redirect: str, scope: str, form: dict[str, str]
) -> dict[str, Any]:
    """The whole code flow through the development identity provider; the token response (or the error)."""
    verifier = secrets.token_urlsafe(48)
    start = await http.get("/auth/authorize", params=_params(client_id, redirect, scope, verifier))
    assert start.status_code == 302, start.text
    location = start.headers["location"]
    if not location.startswith(f"{BASE}/auth/dev-idp") and "/auth/dev-idp" not in location:
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    sealed = parse_qs(urlsplit(location).query)["login"][0]
    done = await http.post("/auth/dev-idp", data={"login": sealed, **form})
    query = {k: v[0] for k, v in parse_qs(urlsplit(done.headers["location"]).query).items()}
    assert done.headers["location"].startswith(redirect)
    if "code" not in query:
        return query
    token = await http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": redirect,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.text
    return dict(token.json())


async def _staff(http: httpx.AsyncClient, username: str) -> dict[str, Any]:
    return await _login(
        http,
        CONSOLE,
        CONSOLE_REDIRECT,
        "user/*.cruds user/AuditEvent.rs openid",
        {"username": username, "otp": "246810"},
    )


def _bearer(staff_app: Any, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=staff_app),
        base_url=BASE,
        headers={"Authorization": f"Bearer {token}", "Accept": FHIR},
    )


async def test_console_client_is_registered_at_the_gateways_own_admin_page(
    browser: httpx.AsyncClient,
) -> None:
    elsewhere = await browser.get(
        "/auth/authorize",
        params=_params(CONSOLE, "https://evil.example/admin/", "user/*.cruds", secrets.token_urlsafe(48)),
    )
    assert elsewhere.status_code == 400  # answered on the gateway's page, never redirected to
    assert "evil.example" not in elsewhere.headers.get("location", "")
    patient_scopes = await browser.get(
        "/auth/authorize",
        params=_params(CONSOLE, CONSOLE_REDIRECT, "patient/Consent.cruds", secrets.token_urlsafe(48)),
    )
    assert patient_scopes.status_code == 302
    assert parse_qs(urlsplit(patient_scopes.headers["location"]).query)["error"] == ["invalid_scope"]


async def test_an_admin_alone_does_not_read_the_trail_an_admin_auditor_does(
    browser: httpx.AsyncClient, staff_app: Any
) -> None:
    admin = await _staff(browser, "ann")
    async with _bearer(staff_app, admin["access_token"]) as http:
        refused = await http.get("/fhir/AuditEvent")
        assert refused.status_code == 403
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert (await http.get("/fhir/Organization")).status_code == 200
        # least privilege: the directory and consents, not clinical data
        assert (await http.get("/fhir/Observation")).status_code == 403
    assert set(admin["scope"].split()) <= {
        "user/Organization.rs",
        "user/Endpoint.rs",
        "user/Patient.rs",
        "user/Consent.cruds",
        "openid",
    }
    chief = await _staff(browser, "chief")
    async with _bearer(staff_app, chief["access_token"]) as http:
        assert (await http.get("/fhir/AuditEvent")).status_code == 200
        assert (await http.get("/fhir/Organization")).status_code == 200
    auditor = await _staff(browser, "aud")
    assert auditor["scope"] == "user/AuditEvent.rs"
    async with _bearer(staff_app, auditor["access_token"]) as http:
        assert (await http.get("/fhir/AuditEvent")).status_code == 200
        assert (await http.get("/fhir/Organization")).status_code == 403


async def test_patient_app_at_its_own_address_reads_the_directory_but_cannot_change_it(
    browser: httpx.AsyncClient, staff_app: Any
) -> None:
    token = await _login(
        browser,
        "rzcp-patient-app",
        APP_REDIRECT,
        "patient/Consent.cruds patient/Organization.rs launch/patient openid",
        {"bsn": new_bsn()},
    )
    assert "patient/Organization.rs" in token["scope"].split()
    async with _bearer(staff_app, token["access_token"]) as http:
        listed = await http.get("/fhir/Organization")
        assert listed.status_code == 200, listed.text
        assert listed.json()["resourceType"] == "Bundle"
        created = await http.post(
            "/fhir/Organization",
            json={"resourceType": "Organization", "name": "Not mine"},
            headers={"Content-Type": FHIR},
        )
        assert created.status_code == 403


@pytest.mark.parametrize(
    ("given", "roles"), [('"admin,auditor"', ["admin", "auditor"]), ('["auditor"]', ["auditor"])]
)
def test_person_roles_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, given: str, roles: list[str]
) -> None:
    monkeypatch.setenv("RZCP_PERSON_ROLES", f'{{"dev:x": {given}}}')
    assert Settings().person_roles == {"dev:x": roles}


def test_a_person_without_a_role_or_with_an_unknown_one_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="person_roles"):
        Settings(person_roles={"dev:x": "root"})
    with pytest.raises(ValueError, match="person_roles"):
        Settings(person_roles={"dev:x": ""})


async def test_logout_ends_the_session_in_every_process(browser: httpx.AsyncClient, staff_app: Any) -> None:
    """RFC 7009 revocation for the public clients: the token is refused from its next use; a second app
    on the same database (another process) refuses it too; foreign or unknown tokens get the same 200."""
    patient = await _login(
        browser, "rzcp-patient-app", APP_REDIRECT, "patient/Consent.cruds launch/patient", {"bsn": new_bsn()}
    )
    staff = await _staff(browser, "chief")
    other_process = create_app(staff_app.state.runtime.settings)
    for token, client_id, probe in (
        (patient["access_token"], "rzcp-patient-app", "/fhir/Consent"),
        (staff["access_token"], CONSOLE, "/fhir/AuditEvent"),
    ):
        async with _bearer(staff_app, token) as http:
            assert (await http.get(probe)).status_code == 200
        wrong_client = await browser.post("/auth/revoke", data={"token": token, "client_id": "nobody"})
        assert wrong_client.status_code == 400
        # two logouts at once (two tabs): both answered, neither fails on the other's row
        ended = await asyncio.gather(
            *(browser.post("/auth/revoke", data={"token": token, "client_id": client_id}) for _ in range(2))
        )
        assert [e.status_code for e in ended] == [200, 200]
        assert (
            await browser.post("/auth/revoke", data={"token": token, "client_id": client_id})
        ).status_code == 200
        for app in (staff_app, other_process):
            async with _bearer(app, token) as http:
                refused = await http.get(probe)
                assert refused.status_code == 401, refused.text
                if client_id == "rzcp-patient-app":  # the dry run, and the access log, are refused too
                    question = {
                        "resourceType": "Parameters",
                        "parameter": [{"name": "resourceType", "valueString": "Observation"}],
                    }
                    evaluated = await http.post("/fhir/Consent/$evaluate", json=question)
                    assert evaluated.status_code == 401, evaluated.text
    garbage = await browser.post("/auth/revoke", data={"token": "not.a.token", "client_id": CONSOLE})
    assert garbage.status_code == 200
    discovery = (await browser.get("/fhir/.well-known/smart-configuration")).json()
    assert discovery["revocation_endpoint"] == f"{BASE}/auth/revoke"
