"""Patient login (authorization code with PKCE through the development identity provider) and what a
patient token reaches: their own Patient and Consents, nothing of anyone else's."""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from rzcp.app import create_app
from rzcp.auth.authorize import s256
from rzcp.auth.bsn import BSN_OID, BSN_SYSTEM, is_valid_bsn
from rzcp.consent.cases import consent_from_compact
from tests.conftest import BASE, FHIR, make_settings

REDIRECT = "https://app.example/callback"
APP_ID = "rzcp-patient-app"


def new_bsn() -> str:
    while True:
        candidate = f"{secrets.randbelow(10**9):09d}"
        if is_valid_bsn(candidate):
            return candidate


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def login_app(app: Any, database_url: str) -> Any:
    """A gateway on the same database with the development identity provider and a registered app."""
    settings = make_settings(
        database_url,
        dev_idp=True,
        patient_app_redirect_uris=[REDIRECT],
        person_roles={"dev:alice": "auditor", "dev:bob": "admin"},
    )
    return create_app(settings)


@pytest_asyncio.fixture(loop_scope="session")
async def browser(login_app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=login_app), base_url=BASE) as http:
        yield http


def authorize_params(challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "scope": "patient/Patient.rs patient/Consent.cruds launch/patient openid",
        "state": uuid.uuid4().hex,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": f"{BASE}/fhir",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


async def login(browser: httpx.AsyncClient, bsn: str, verifier: str, **overrides: str) -> dict[str, str]:
    """Authorize, log in at the dev IdP, and return the redirect's query (code and state)."""
    params = authorize_params(s256(verifier), **overrides)
    start = await browser.get("/auth/authorize", params=params)
    assert start.status_code == 302, start.text
    form_page = await browser.get(start.headers["location"])
    assert form_page.status_code == 200 and 'name="bsn"' in form_page.text
    # a login form is never shown inside another site's frame (found missing by a security test)
    assert form_page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in form_page.headers["content-security-policy"]
    sealed = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
    done = await browser.post("/auth/dev-idp", data={"login": sealed, "bsn": bsn})
    assert done.status_code == 303, done.text
    target = done.headers["location"]
    assert target.startswith(REDIRECT + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert query["state"] == params["state"]
    return query


async def redeem(browser: httpx.AsyncClient, code: str, verifier: str | None, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": APP_ID}
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(extra)
    return await browser.post("/auth/token", data=form)


async def patient_token(browser: httpx.AsyncClient, bsn: str) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    code = (await login(browser, bsn, verifier))["code"]
    response = await redeem(browser, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def assert_oauth(response: httpx.Response, error: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error


async def test_login_finds_or_creates_the_patient_and_keeps_the_bsn_out_of_the_token(
    browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    bsn = new_bsn()
    token = await patient_token(browser, bsn)
    assert bsn not in token["access_token"]
    import base64
    import json

    payload = json.loads(base64.urlsafe_b64decode(token["access_token"].split(".")[1] + "=="))
    assert payload["patient"] == token["patient"] and bsn not in json.dumps(payload)
    assert payload["kind"] == "patient" and payload["amr"] == ["pwd"]
    found = await client.get("/fhir/Patient", params={"identifier": f"{BSN_SYSTEM}|{bsn}"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [token["patient"]]
    again = await patient_token(browser, bsn)
    assert again["patient"] == token["patient"]  # found, not created again


async def test_pkce_verifier_missing_wrong_or_equal_to_the_challenge(browser: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = (await login(browser, new_bsn(), verifier))["code"]
    assert_oauth(await redeem(browser, code, None), "invalid_request")
    code = (await login(browser, new_bsn(), verifier))["code"]
    assert_oauth(await redeem(browser, code, secrets.token_urlsafe(48)), "invalid_grant")
    code = (await login(browser, new_bsn(), verifier))["code"]
    assert_oauth(await redeem(browser, code, s256(verifier)), "invalid_grant")


async def test_a_code_is_single_use(browser: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = (await login(browser, new_bsn(), verifier))["code"]
    assert (await redeem(browser, code, verifier)).status_code == 200
    reused = await redeem(browser, code, verifier)
    assert_oauth(reused, "invalid_grant")
    assert "already used" in reused.json()["error_description"]
    assert_oauth(await redeem(browser, "made-up-code", verifier), "invalid_grant")


async def test_plain_pkce_and_missing_challenge_are_refused_back_at_the_app(
    browser: httpx.AsyncClient,
) -> None:
    for overrides in (
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},
        {"code_challenge": ""},
        {"state": ""},
        {"response_type": "token"},
        {"scope": "system/Patient.read"},
    ):
        params = authorize_params(s256(secrets.token_urlsafe(48)), **overrides)
        response = await browser.get("/auth/authorize", params=params)
        assert response.status_code == 302, overrides
        back = parse_qs(urlsplit(response.headers["location"]).query)
        assert response.headers["location"].startswith(REDIRECT)
        assert back["error"][0] in ("invalid_request", "unsupported_response_type", "invalid_scope")
        if params.get("state"):
            assert back["state"] == [params["state"]]


async def test_unregistered_redirect_uri_is_never_redirected_to(browser: httpx.AsyncClient) -> None:
    for overrides in (
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": REDIRECT + "/../evil"},
        {"client_id": "someone-else"},
    ):
        response = await browser.get("/auth/authorize", params=authorize_params("x" * 43, **overrides))
        assert response.status_code == 400
        assert "location" not in response.headers
    verifier = secrets.token_urlsafe(48)
    code = (await login(browser, new_bsn(), verifier))["code"]
    other = await redeem(browser, code, verifier, redirect_uri="https://evil.example/callback")
    assert_oauth(other, "invalid_grant")


async def test_invalid_bsn_is_refused_by_the_dev_idp(browser: httpx.AsyncClient) -> None:
    start = await browser.get("/auth/authorize", params=authorize_params(s256(secrets.token_urlsafe(48))))
    sealed = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
    response = await browser.post("/auth/dev-idp", data={"login": sealed, "bsn": "123456789"})
    assert response.status_code == 400 and "11-check" in response.text
    forged = await browser.post("/auth/dev-idp", data={"login": sealed + "x", "bsn": new_bsn()})
    assert forged.status_code == 400


@pytest_asyncio.fixture(loop_scope="session")
async def two_patients(browser: httpx.AsyncClient, client: httpx.AsyncClient, app: Any) -> dict[str, Any]:
    """Patient A with a token, patient B with a Consent and an Observation of their own."""
    a = await patient_token(browser, new_bsn())
    b = await patient_token(browser, new_bsn())

    async def consent(patient_id: str, performer: str) -> str:
        body = consent_from_compact({"id": "draft", "permit": {"to": "huisartsen"}}, app.state.runtime.policy)
        del body["id"], body["meta"]
        body["performer"] = [{"reference": f"Patient/{performer}"}]
        body["patient"] = {"reference": f"Patient/{patient_id}"}
        # an administrator records a consent on the patient's documented request only
        body["sourceAttachment"] = {"title": "Consent form signed by the patient"}
        response = await client.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    return {
        "a": a,
        "b": b,
        "a_consent": await consent(a["patient"], a["patient"]),
        "b_consent": await consent(b["patient"], b["patient"]),
    }


PERFORMER = "Consent.performer[0].reference"


async def test_a_consent_names_no_other_person(
    login_app: Any, browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """Found by a security test: a patient's consent named another patient as performer and carried her
    BSN, stored as sent; administrators' searches then tied the two together. Patient or administrator,
    a consent holds no BSN and names no other Patient (422, nothing stored)."""
    me, other = await patient_token(browser, new_bsn()), await patient_token(browser, new_bsn())
    base = consent_from_compact(
        {"id": "draft", "permit": {"to": "huisartsen"}}, login_app.state.runtime.policy
    )
    del base["id"], base["meta"]
    base["patient"] = {"reference": f"Patient/{me['patient']}"}
    bsn = {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999967551"}
    bad = [
        ({"performer": [{"reference": f"Patient/{other['patient']}"}]}, "Consent.performer[0].reference"),
        (
            {"sourceReference": {"reference": f"Patient/{other['patient']}"}},
            "Consent.sourceReference.reference",
        ),
        ({"identifier": [bsn]}, "Consent.identifier[0].system"),
        ({"contained": [{"resourceType": "Patient", "id": "p"}]}, "Consent.contained[0]"),
        # other spellings, found by a later test
        ({"performer": [{"reference": f"Patient?identifier={BSN_SYSTEM}|999911120"}]}, PERFORMER),
        *(
            ({"performer": [{"reference": f"Patient/{other['patient']}{suffix}"}]}, PERFORMER)
            for suffix in ("?_format=json", "#frag", "/", "/_history/", "/$everything")
        ),
        ({"performer": [{"type": "Patient", "identifier": {"value": "999911120"}}]},
         "Consent.performer[0].identifier.value"),
        ({"identifier": [{"system": f"urn:oid:{BSN_OID}.", "value": "x"}]}, "Consent.identifier[0].system"),
        ({"identifier": [{"system": BSN_SYSTEM[:-1] + "%6E", "value": "x"}]}, "Consent.identifier[0].system"),
        ({"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">999911120</div>'}},
         "Consent.text.div"),
    ]  # fmt: skip
    async with as_patient(login_app, me["access_token"]) as http:
        for extra, element in bad:
            response = await http.post(
                "/fhir/Consent", json={**base, **extra}, headers={"Content-Type": FHIR}
            )
            assert response.status_code == 422, (element, response.text)
            assert response.json()["issue"][0]["expression"] == [element]
        mine = {**base, "performer": [{"reference": f"Patient/{me['patient']}"}]}
        own = await http.post("/fhir/Consent", json=mine, headers={"Content-Type": FHIR})
        assert own.status_code == 201, own.text
    found = await client.get(
        "/fhir/Consent", params={"identifier": "http://fhir.nl/fhir/NamingSystem/bsn|999967551"}
    )
    assert found.status_code == 200 and not found.json().get("entry")


async def test_a_search_of_the_directory_includes_the_directory_only(
    login_app: Any, browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """The region's directory is open to a patient (to name an organisation in a consent). Found by a
    security test: `Organization?_revinclude=Consent:organization` brought other patients' consents along."""
    organization = await client.post(
        "/fhir/Organization", json={"resourceType": "Organization", "name": "Ziekenhuis Dir"},
        headers={"Content-Type": FHIR},
    )  # fmt: skip
    org_ref = f"Organization/{organization.json()['id']}"
    other = await patient_token(browser, new_bsn())
    body = consent_from_compact(
        {"id": "draft", "permit": {"to": "huisartsen"}}, login_app.state.runtime.policy
    )
    del body["id"], body["meta"]
    body.update(patient={"reference": f"Patient/{other['patient']}"}, organization=[{"reference": org_ref}],
                sourceAttachment={"title": "Consent form signed by the patient"})  # fmt: skip
    stored = await client.post("/fhir/Consent", json=body, headers={"Content-Type": FHIR})
    assert stored.status_code == 201, stored.text
    verifier = secrets.token_urlsafe(48)
    scope = "patient/Patient.rs patient/Consent.cruds patient/Organization.rs launch/patient openid"
    code = (await login(browser, new_bsn(), verifier, scope=scope))["code"]
    token = (await redeem(browser, code, verifier)).json()["access_token"]
    async with as_patient(login_app, token) as http:
        for include in ("_revinclude=Consent:organization", "_revinclude=Provenance:target"):
            answer = await http.get(f"/fhir/Organization?_id={organization.json()['id']}&{include}")
            assert answer.status_code == 403, (include, answer.text)
            assert stored.json()["id"] not in answer.text
        # an include that does not name its type leaves out what is not the directory
        endpoint = await http.get(
            f"/fhir/Organization?_id={organization.json()['id']}&_include=Organization:endpoint"
        )
        assert {e["resource"]["resourceType"] for e in endpoint.json()["entry"]} == {"Organization"}
        partof = {"_id": organization.json()["id"], "_include": "Organization:partof"}
        parents = await http.get("/fhir/Organization", params=partof)
        assert parents.status_code == 200, parents.text


def as_patient(login_app: Any, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=login_app),
        base_url=BASE,
        headers={"Authorization": f"Bearer {token}", "Accept": FHIR},
    )


def ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


async def test_patient_reads_their_own_patient_and_consents(
    login_app: Any, two_patients: dict[str, Any]
) -> None:
    a = two_patients["a"]
    async with as_patient(login_app, a["access_token"]) as http:
        own = await http.get(f"/fhir/Patient/{a['patient']}")
        assert own.status_code == 200
        assert (await http.get(f"/fhir/Patient/{a['patient']}/_history/1")).status_code == 200
        assert (await http.get(f"/fhir/Patient/{a['patient']}/_history")).status_code == 200
        assert (await http.get(f"/fhir/Consent/{two_patients['a_consent']}")).status_code == 200
        search = (await http.get("/fhir/Consent")).json()
        assert ids(search) == {f"Consent/{two_patients['a_consent']}"}
        patients = (await http.get("/fhir/Patient")).json()
        assert ids(patients) == {f"Patient/{a['patient']}"}


async def test_patient_token_does_not_reach_another_patient(
    login_app: Any, two_patients: dict[str, Any]
) -> None:
    a, b = two_patients["a"], two_patients["b"]
    b_consent = two_patients["b_consent"]
    async with as_patient(login_app, a["access_token"]) as http:
        # by id: answered as if it did not exist
        for path in (
            f"/fhir/Patient/{b['patient']}",
            f"/fhir/Patient/{b['patient']}/_history/1",
            f"/fhir/Patient/{b['patient']}/_history",
            f"/fhir/Consent/{b_consent}",
            f"/fhir/Consent/{b_consent}/_history/1",
        ):
            response = await http.get(path)
            assert response.status_code == 404, path
        # by search parameter
        for query in (
            f"/fhir/Consent?patient=Patient/{b['patient']}",
            f"/fhir/Consent?_id={b_consent}",
            f"/fhir/Patient?_id={b['patient']}",
        ):
            response = await http.get(query)
            assert response.status_code == 200, response.text
            assert ids(response.json()) == set(), query
        # by _include and _revinclude
        included = (await http.get("/fhir/Consent", params={"_include": "Consent:patient"})).json()
        assert ids(included) == {f"Consent/{two_patients['a_consent']}", f"Patient/{a['patient']}"}
        performer = (await http.get("/fhir/Consent", params={"_include": "Consent:consentor"})).json()
        assert ids(performer) == {f"Consent/{two_patients['a_consent']}", f"Patient/{a['patient']}"}
        rev = (await http.get("/fhir/Patient", params={"_revinclude": "Consent:patient"})).json()
        assert f"Consent/{b_consent}" not in ids(rev)
        # writes of another patient's resources
        denied = await http.delete(f"/fhir/Consent/{b_consent}")
        assert denied.status_code == 404
        foreign = consent_from_compact(
            {"id": "draft", "permit": {"to": "huisartsen"}}, login_app.state.runtime.policy
        )
        del foreign["id"], foreign["meta"]
        foreign["patient"] = {"reference": f"Patient/{b['patient']}"}
        created = await http.post("/fhir/Consent", json=foreign, headers={"Content-Type": FHIR})
        # a patient's consent is always their own, whatever the body says
        assert created.status_code == 201, created.text
        assert created.json()["patient"]["reference"] == f"Patient/{a['patient']}"
        # other resource types and type-level history are out of reach
        assert (await http.get("/fhir/Observation")).status_code == 403
        assert (await http.get("/fhir/Organization")).status_code == 403
        assert (await http.get("/fhir/Consent/_history")).status_code == 403
        # batch/transaction is not implemented yet: the base URL takes no POST at all
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{b['patient']}"}}
        ]}  # fmt: skip
        response = await http.post("/fhir", json=batch, headers={"Content-Type": FHIR})
        assert response.status_code in (404, 405)
        assert b["patient"] not in response.text


async def test_patient_writes_their_own_consent(login_app: Any, two_patients: dict[str, Any]) -> None:
    a = two_patients["a"]
    own = consent_from_compact(
        {"id": "draft", "permit": {"to": "huisartsen"}}, login_app.state.runtime.policy
    )
    del own["id"], own["meta"]
    own["patient"] = {"reference": f"Patient/{a['patient']}"}
    async with as_patient(login_app, a["access_token"]) as http:
        created = await http.post("/fhir/Consent", json=own, headers={"Content-Type": FHIR})
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        moved = {**created.json(), "patient": {"reference": f"Patient/{two_patients['b']['patient']}"}}
        response = await http.put(f"/fhir/Consent/{cid}", json=moved, headers={"Content-Type": FHIR})
        assert response.status_code == 200  # the patient is forced back to the token's own
        assert (await http.get(f"/fhir/Consent/{cid}")).json()["patient"] == own["patient"]


@pytest.mark.parametrize(
    ("user", "otp", "outcome"), [("alice", "", "access_denied"), ("mallory", "246810", "access_denied")]
)
async def test_staff_login_needs_a_role_and_for_auditors_a_second_factor(
    browser: httpx.AsyncClient, user: str, otp: str, outcome: str
) -> None:
    params = authorize_params(s256(secrets.token_urlsafe(48)), scope="user/AuditEvent.rs")
    start = await browser.get("/auth/authorize", params=params)
    sealed = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
    done = await browser.post("/auth/dev-idp", data={"login": sealed, "username": user, "otp": otp})
    assert done.status_code == 303
    assert parse_qs(urlsplit(done.headers["location"]).query)["error"] == [outcome]


async def test_auditor_with_a_second_factor_reads_the_audit_trail(
    browser: httpx.AsyncClient, login_app: Any
) -> None:
    verifier = secrets.token_urlsafe(48)
    params = authorize_params(s256(verifier), scope="user/AuditEvent.rs user/Patient.rs")
    start = await browser.get("/auth/authorize", params=params)
    sealed = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
    done = await browser.post("/auth/dev-idp", data={"login": sealed, "username": "alice", "otp": "246810"})
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    token = await redeem(browser, code, verifier)
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "user/AuditEvent.rs"
    async with as_patient(login_app, token.json()["access_token"]) as http:
        assert (await http.get("/fhir/AuditEvent")).status_code == 200
        assert (await http.get("/fhir/Patient")).status_code == 403
