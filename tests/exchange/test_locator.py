"""The locator's FHIR interaction ($announce / $withdraw), the regional Patient by BSN, the member
directory as Organization and Endpoint, and BSNs never stored in plain text."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, text

from rzcp.app import create_app
from rzcp.audit.search import search_events
from rzcp.exchange.secrets import BsnProtector
from rzcp.exchange.tables import locations
from rzcp.membersim.bsn import derive_test_bsn
from rzcp.settings import Settings
from tests.exchange.region import Region, _migrate, gateway_settings
from tests.exchange.servers import serve

BSN = "http://fhir.nl/fhir/NamingSystem/bsn"


def parameters(bsn: str, local: str | None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "identifier", "valueIdentifier": {"system": BSN, "value": bsn}}]
    if local is not None:
        parts.append({"name": "patient", "valueReference": {"reference": f"Patient/{local}"}})
    return {"resourceType": "Parameters", "parameter": parts}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def region(database_url: str) -> AsyncIterator[tuple[Region, Any, Any]]:
    settings = gateway_settings(database_url)
    await _migrate(database_url)
    with serve(create_app(settings)) as url:
        region = Region(settings, url)
        member = await region.add_member("Huisartsenpraktijk Noord", "huisartsen", "http://127.0.0.1:9")
        http = await region.client_for(await region.add_client(member.ura))
        yield region, member, http
        await http.aclose()
        await region.close()


async def test_announce_find_and_withdraw(region: tuple[Region, Any, Any]) -> None:
    gateway, member, http = region
    bsn = derive_test_bsn("locator-test")
    response = await http.post("/fhir/Patient/$announce", json=parameters(bsn, "hn-1"))
    assert response.status_code == 200, response.text
    regional = response.json()["parameter"][0]["valueReference"]["reference"]
    # Announcing again (or under a second local id) keeps one regional patient.
    again = await http.post("/fhir/Patient/$announce", json=parameters(bsn, "hn-1"))
    assert again.json()["parameter"][0]["valueReference"]["reference"] == regional
    found = (await http.get("/fhir/Patient", params={"identifier": f"{BSN}|{bsn}"})).json()
    assert found["total"] == 1
    patient = found["entry"][0]["resource"]
    assert f"Patient/{patient['id']}" == regional
    assert {"system": BSN, "value": bsn} in patient["identifier"]
    # A search by POST (the parameters in a form body) is looked up in the locator alike.
    posted = await http.post("/fhir/Patient/_search", data={"identifier": f"{BSN}|{bsn}"})
    assert posted.status_code == 200, posted.text
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == [patient["id"]]
    # The stored Patient itself carries no BSN.
    stored = (await http.get(f"/fhir/{regional}")).json()
    assert all(i["system"] != BSN for i in stored.get("identifier", []))
    withdrawn = await http.post("/fhir/Patient/$withdraw", json=parameters(bsn, None))
    assert withdrawn.status_code == 200
    async with gateway.db.read() as conn:
        rows = (await conn.execute(select(locations).where(locations.c.member_ura == member.ura))).all()
    assert rows == []
    # Both are in the audit trail as about the patient (and so in the patient's own access log).
    for answered in (response, withdrawn):
        page = await search_events(gateway.db, correlation_id=answered.headers["x-request-id"])
        (event,) = page.events
        assert event["entity"][0]["what"]["reference"] == regional, event["entity"]


async def test_no_bsn_in_plain_text(region: tuple[Region, Any, Any]) -> None:
    gateway, _member, http = region
    bsn = derive_test_bsn("plain-text-test")
    await http.post("/fhir/Patient/$announce", json=parameters(bsn, "hn-2"))
    async with gateway.db.read() as conn:
        for table in ("exchange_patients", "exchange_locations", "resources", "idx_token", "idx_string"):
            rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()
            assert not any(bsn in str(value) for row in rows for value in row), table
    digest = BsnProtector(gateway.settings.bsn_secret).lookup_hash(bsn)
    async with gateway.db.read() as conn:
        assert await conn.scalar(
            text("SELECT count(*) FROM exchange_patients WHERE bsn_hash = :h"), {"h": digest}
        )


async def test_bad_announcements(region: tuple[Region, Any, Any]) -> None:
    _gateway, _member, http = region
    assert (await http.post("/fhir/Patient/$announce", json=parameters("123456789", "x"))).status_code == 400
    bsn = derive_test_bsn("bad-announcement")
    assert (await http.post("/fhir/Patient/$announce", json=parameters(bsn, None))).status_code == 400
    # two patients in one announcement (found by a probe: the last one was taken, silently)
    other = derive_test_bsn("bad-announcement-2", {bsn})
    for twice in (
        {
            **parameters(bsn, "p1"),
            "parameter": [*parameters(bsn, "p1")["parameter"], *parameters(other, None)["parameter"]],
        },
        {
            **parameters(bsn, "p1"),
            "parameter": [*parameters(bsn, "p1")["parameter"], *parameters(bsn, "p2")["parameter"][1:]],
        },
    ):
        refused = await http.post("/fhir/Patient/$announce", json=twice)
        assert refused.status_code == 400 and "more than once" in refused.text, refused.text
    unknown = await http.get("/fhir/Patient", params={"identifier": f"{BSN}|{bsn}"})
    assert unknown.status_code == 200, unknown.text
    assert "entry" not in unknown.json()  # nothing was announced


async def test_the_bsn_is_known_however_its_system_is_spelled(region: tuple[Region, Any, Any]) -> None:
    """An integrator's walkthrough: a push took the BSN under its OID, a search and $announce did not (the
    search answered an empty Bundle, as for a patient the region does not know)."""
    _gateway, _member, http = region
    bsn = derive_test_bsn("locator-oid")
    oid = "urn:oid:2.16.840.1.113883.2.4.6.3"
    body = parameters(bsn, "oid-1")
    body["parameter"][0]["valueIdentifier"]["system"] = oid
    announced = await http.post("/fhir/Patient/$announce", json=body)
    assert announced.status_code == 200, announced.text
    regional = announced.json()["parameter"][0]["valueReference"]["reference"]
    for system in (oid, "2.16.840.1.113883.2.4.6.3", BSN, BSN.upper() + "/"):
        found = await http.get("/fhir/Patient", params={"identifier": f"{system}|{bsn}"})
        assert found.status_code == 200, (system, found.text)
        assert [f"Patient/{e['resource']['id']}" for e in found.json()["entry"]] == [regional], system
        pulled = await http.get("/fhir/Condition", params={"patient.identifier": f"{system}|{bsn}"})
        assert pulled.status_code == 200, (system, pulled.text)


@pytest.mark.parametrize("value", ["123456789", "12345678x", "1234567890"])
async def test_a_number_that_is_no_bsn_is_a_400_naming_the_parameter(
    region: tuple[Region, Any, Any], value: str
) -> None:
    _gateway, _member, http = region
    for path, name in (("/fhir/Patient", "identifier"), ("/fhir/Condition", "patient.identifier")):
        response = await http.get(path, params={name: f"{BSN}|{value}"})
        assert response.status_code == 400, (name, response.text)
        issue = response.json()["issue"][0]
        assert issue["expression"] == [name] and "11-check" in issue["diagnostics"]


async def test_an_announcement_takes_only_its_two_parameters(region: tuple[Region, Any, Any]) -> None:
    _gateway, _member, http = region
    body = parameters(derive_test_bsn("locator-extra"), "x-1")
    body["parameter"].append({"name": "foo", "valueString": "x"})
    response = await http.post("/fhir/Patient/$announce", json=body)
    assert response.status_code == 400 and "unknown parameter 'foo'" in response.text, response.text
    for odd in ([1], "x", 5):
        body = parameters(derive_test_bsn("locator-odd"), "x-1")
        body["parameter"][0]["valueIdentifier"] = odd
        body["parameter"][1]["valueReference"] = odd
        response = await http.post("/fhir/Patient/$announce", json=body)
        assert response.status_code == 400, response.text
    # a review: a parameter that is no list was a 500, a part that is no object was skipped, and a list
    # as the patient's id was stored as its Python spelling
    bsn = derive_test_bsn("locator-shapes")
    for shape in (5, True, {"name": "identifier"}, [*parameters(bsn, "x-2")["parameter"], "junk"]):
        body = {"resourceType": "Parameters", "parameter": shape}
        response = await http.post("/fhir/Patient/$announce", json=body)
        assert response.status_code == 400 and "list of parameters" in response.text, response.text
    for local in ({"valueString": {"x": 1}}, {"valueReference": {"reference": ["a"]}}):
        body = parameters(bsn, None)
        body["parameter"].append({"name": "patient", **local})
        response = await http.post("/fhir/Patient/$announce", json=body)
        assert response.status_code == 400 and "Patient/<your id>" in response.text, response.text


async def test_the_directory_is_readable_as_organization_and_endpoint(
    region: tuple[Region, Any, Any],
) -> None:
    _gateway, member, http = region
    ura = member.ura
    orgs = (
        await http.get(
            "/fhir/Organization", params={"identifier": f"http://fhir.nl/fhir/NamingSystem/ura|{ura}"}
        )
    ).json()
    [org] = [e["resource"] for e in orgs["entry"] if e["search"]["mode"] == "match"]
    assert org["name"] == "Huisartsenpraktijk Noord" and org["active"] is True
    endpoint = (await http.get(f"/fhir/{org['endpoint'][0]['reference']}")).json()
    assert endpoint["address"] == "http://127.0.0.1:9/fhir"
    assert endpoint["status"] == "active"


@pytest.mark.parametrize("public_base_url", [None, "http://gateway.example/fhir"])
def test_production_needs_an_https_public_base_url(public_base_url: str | None) -> None:
    """Without it the token issuer and audience, and the discovery documents, follow each request's
    Host header: a client could be sent a foreign token endpoint."""
    settings = {
        "environment": "production",
        "secret_key": secrets.token_urlsafe(48),
        "bsn_secret": secrets.token_urlsafe(48),
        "database_url": "postgresql+asyncpg://db/rzcp",
        "audit_signing_key": "k",
        "metrics_token": secrets.token_urlsafe(48),
    }
    with pytest.raises(ValueError, match="RZCP_PUBLIC_BASE_URL"):
        Settings(**settings, public_base_url=public_base_url)
    assert Settings(**settings, public_base_url="https://gateway.example/fhir").environment == "production"


def test_production_refuses_the_default_bsn_secret() -> None:
    with pytest.raises(ValueError, match="RZCP_BSN_SECRET"):
        Settings(
            environment="production",
            secret_key=secrets.token_urlsafe(48),
            database_url="postgresql+asyncpg://db/rzcp",
            audit_signing_key="k",
        )


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ({"secret_key": "a" * 40}, "RZCP_SECRET_KEY"),  # long, but hardly random (an operator's trial)
        ({"metrics_token": "ab" * 20}, "RZCP_METRICS_TOKEN"),
        ({"bsn_secret": "short"}, "RZCP_BSN_SECRET"),
    ],
)
def test_production_refuses_secrets_that_are_not_random(secret: dict[str, str], says: str) -> None:
    settings = {
        "environment": "production",
        "secret_key": secrets.token_urlsafe(48),
        "bsn_secret": secrets.token_urlsafe(48),
        "metrics_token": secrets.token_urlsafe(48),
        "database_url": "postgresql+asyncpg://db/rzcp",
        "audit_signing_key": "k",
        "public_base_url": "https://gateway.example/fhir",
    }
    with pytest.raises(ValueError, match=says):
        Settings(**{**settings, **secret})
    shared = settings["secret_key"]
    with pytest.raises(ValueError, match="three different values"):
        Settings(**{**settings, "bsn_secret": shared})
