"""The administrators' console in a real browser against a live gateway: the second factor at login, each
role seeing only its own part (and the API refusing the rest), members and clients registered in the page
and their tokens refused the moment they are revoked or suspended, the audit trail searched by patient and
by practitioner, and the charts drawn from real traffic."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route, expect

from tests.conftest import SystemClient, new_key
from tests.integration.conftest import new_bsn
from tests.web.conftest import LiveGateway, dev_login_person, screenshot

pytestmark = pytest.mark.asyncio(loop_scope="session")

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
UZI_SYSTEM = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"


async def open_console(page: Page, username: str, *, second_factor: bool = True) -> None:
    """Open /admin/ in English and log in at the development identity provider."""
    await page.goto("/admin/")
    await page.get_by_role("button", name="English").click()
    await page.get_by_role("button", name="Log in", exact=True).click()
    await dev_login_person(page, username, second_factor=second_factor)
    await page.wait_for_url("**/admin/**")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)


async def person_token(page: Page) -> str:
    """The logged-in person's token, to call the console's API directly as the page would."""
    return str(await page.evaluate("JSON.parse(sessionStorage.getItem('rzcp.session')).token"))


async def console_api(
    gateway: LiveGateway, token: str, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        return await http.request(
            method,
            f"/admin/api/{path}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            **kwargs,
        )


async def nav_links(page: Page) -> list[str]:
    return [text.strip() for text in await page.locator("#nav a").all_inner_texts()]


async def system_token(gateway: LiveGateway, system: SystemClient) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        form = system.form("system/*.cruds", aud=f"{gateway.url}/auth/token")
        return await http.post("/auth/token", data=form)


async def fhir_status(gateway: LiveGateway, token: str) -> int:
    """The status of an ordinary API call with this token (a search any member system may make)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        response = await http.get(
            "/fhir/Organization",
            params={"_count": "1"},
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/fhir+json",
                "X-Acting-Practitioner": f"{UZI_SYSTEM}|900012345",
            },
        )
        return response.status_code


@pytest.mark.parametrize("path", ["/admin/", "/app/"])
async def test_the_language_chosen_while_the_page_still_loads_is_not_lost(page: Page, path: str) -> None:
    """A slow link delays the page's texts; a click on the language button in that moment used to do
    nothing (no handler yet), leaving a Dutch page whose English buttons a user (or a test) then waited
    for in vain. The button now stays disabled until a click can work."""
    release = asyncio.Event()

    async def hold_strings(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await page.route("**/strings.json", hold_strings)
    await page.goto(path)
    click = asyncio.create_task(page.locator("#lang").click())
    await asyncio.sleep(0.3)
    assert not click.done()  # the click waits for the page instead of falling into the void
    release.set()
    await click
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("#lang")).to_have_text(re.compile("Nederlands"))


async def test_login_needs_the_second_factor_and_an_admin_cannot_read_the_trail(
    page: Page, live_gateway: LiveGateway
) -> None:
    await open_console(page, "admin", second_factor=False)
    refusal = page.get_by_role("alert")
    await expect(refusal).to_contain_text(
        "The identity provider refused the login: this role needs a login with a second factor."
    )
    await expect(refusal).not_to_contain_text("admin role")  # the provider's own English stays out
    await expect(page.locator("#nav")).to_be_hidden()
    await screenshot(page, "console-login-refused")

    await page.get_by_role("button", name="Log in", exact=True).click()
    await dev_login_person(page, "admin")
    await expect(page.get_by_role("heading", name="Health overview")).to_be_visible()
    assert await nav_links(page) == ["Health", "Members", "Clients"]
    await expect(page.locator("#health-status")).to_be_visible()
    await screenshot(page, "console-health")
    await page.get_by_role("button", name="Nederlands").click()
    await expect(page.get_by_role("heading", name="Overzicht")).to_be_visible()
    assert await nav_links(page) == ["Overzicht", "Leden", "Systemen"]
    await page.get_by_role("button", name="English").click()
    await expect(page.get_by_role("heading", name="Health overview")).to_be_visible()

    await page.evaluate("location.hash = '#audit'")
    await expect(page.get_by_text("That section is not part of your role.")).to_be_visible()
    await expect(page.locator("#audit-form")).to_have_count(0)
    token = await person_token(page)
    assert (await console_api(live_gateway, token, "GET", "audit/events")).status_code == 403
    assert (await console_api(live_gateway, token, "GET", "audit/stats")).status_code == 403

    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("button", name="Log in", exact=True)).to_be_visible()


async def test_members_and_clients_registered_in_the_page_work_until_revoked_or_suspended(
    page: Page, live_gateway: LiveGateway, tmp_path: Path
) -> None:
    await open_console(page, "admin")
    ura = f"{uuid.uuid4().int % 10**8:08d}"
    name = f"Huisartsenpraktijk {ura}"
    await page.get_by_role("link", name="Members").click()
    await page.get_by_label("URA").fill(ura)
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Category").select_option(index=1)
    category = (await page.get_by_label("Category").locator("option").nth(1).inner_text()).rsplit(" (", 1)[0]
    await page.get_by_label("FHIR endpoint").fill(f"https://{ura}.example/fhir")
    await page.get_by_role("button", name="Register member").click()
    await expect(page.get_by_text(f"{name} ({ura}) is registered.")).to_be_visible()
    member_row = page.locator(f"#members-table tr[data-ura='{ura}']")
    await expect(member_row).to_contain_text("active")
    await expect(member_row.locator("td").nth(2)).to_have_text(category)  # the category's name, not its code
    listed = await page.locator("#members-table tbody tr").count()  # the caption counts them, in English
    await expect(page.locator("#members-table caption")).to_have_text(
        "1 member" if listed == 1 else f"{listed} members"
    )

    await page.get_by_role("link", name="Clients").click()
    pasted, uploaded = (
        SystemClient(f"ehr-{ura}-a", ura, new_key()),
        SystemClient(f"ehr-{ura}-b", ura, new_key()),
    )
    await register_client(page, pasted, paste=True, tmp_path=tmp_path)
    await register_client(page, uploaded, paste=False, tmp_path=tmp_path)
    await screenshot(page, "console-clients")

    tokens = {}
    for system in (pasted, uploaded):
        answer = await system_token(live_gateway, system)
        assert answer.status_code == 200, answer.text
        tokens[system.client_id] = answer.json()["access_token"]
        assert await fhir_status(live_gateway, tokens[system.client_id]) == 200

    row = page.locator(f"#clients-table tr[data-client='{pasted.client_id}']")
    await row.get_by_role("button", name="revoke").click()
    await row.get_by_role("button", name="Yes, revoke").click()
    await expect(page.locator(f"#clients-table tr[data-client='{pasted.client_id}']")).to_contain_text(
        "revoked"
    )
    assert await fhir_status(live_gateway, tokens[pasted.client_id]) == 401
    assert await fhir_status(live_gateway, tokens[uploaded.client_id]) == 200

    # Key rotation: the uploaded client's keys replaced in the page; the old key gets no token any more.
    rotated = SystemClient(uploaded.client_id, ura, new_key())
    row = page.locator(f"#clients-table tr[data-client='{uploaded.client_id}']")
    await row.get_by_role("button", name="replace keys").click()
    await expect(page.get_by_label("New JWKS", exact=True)).to_be_focused()
    await page.get_by_label("New JWKS", exact=True).fill(
        json.dumps({"keys": [rotated.key.as_dict(private=False)]})
    )
    await page.get_by_role("button", name="Save the new keys").click()
    await expect(page.get_by_text(f"The keys of {uploaded.client_id} are replaced.")).to_be_visible()
    await expect(row).to_contain_text(rotated.key.kid)
    assert (await system_token(live_gateway, uploaded)).status_code in (400, 401)
    assert (await system_token(live_gateway, rotated)).status_code == 200
    assert await fhir_status(live_gateway, tokens[uploaded.client_id]) == 200  # issued before: runs out

    await page.get_by_role("link", name="Members").click()
    await member_row.get_by_role("button", name="suspend").click()
    await expect(member_row.get_by_role("button", name="Cancel")).to_be_focused()  # Enter twice does nothing
    await member_row.get_by_role("button", name="Yes, suspend").click()
    await expect(page.get_by_text(f"{name} is suspended.")).to_be_visible()
    await expect(page.locator(f"#members-table tr[data-ura='{ura}']")).to_contain_text("suspended")
    await screenshot(page, "console-members")
    assert await fhir_status(live_gateway, tokens[uploaded.client_id]) == 401
    assert (await system_token(live_gateway, rotated)).status_code in (400, 401)

    await member_row.get_by_role("button", name="reinstate").click()
    await member_row.get_by_role("button", name="Yes, reinstate").click()
    await expect(page.get_by_text(f"{name} is active again.")).to_be_visible()
    await expect(page.locator(f"#members-table tr[data-ura='{ura}']")).to_contain_text("active")
    again = await system_token(live_gateway, rotated)  # the revoked client stays revoked
    assert again.status_code == 200 and (await system_token(live_gateway, pasted)).status_code in (400, 401)
    assert await fhir_status(live_gateway, again.json()["access_token"]) == 200

    # Its scopes narrowed in the page: the token it holds is refused at once, a new one reads no directory.
    await page.get_by_role("link", name="Clients").click()
    row = page.locator(f"#clients-table tr[data-client='{uploaded.client_id}']")
    await expect(row).to_contain_text("system/*.rs system/Patient.c system/Bundle.c")  # the least, by default
    await row.get_by_role("button", name="change scopes").click()
    await expect(page.get_by_label("New scopes")).to_be_focused()
    await page.get_by_label("New scopes").fill("system/Patient.c")
    await page.get_by_role("button", name="Save the scopes").click()
    await expect(page.get_by_text(f"The scopes of {uploaded.client_id} are changed.")).to_be_visible()
    await expect(row.locator("td").nth(2)).to_have_text("system/Patient.c")
    assert await fhir_status(live_gateway, again.json()["access_token"]) == 401
    narrowed = await system_token(live_gateway, rotated)
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "system/Patient.c", narrowed.text
    assert await fhir_status(live_gateway, narrowed.json()["access_token"]) == 403
    await page.get_by_role("link", name="Members").click()

    # A second registration of the same URA is refused in plain words, not as raw JSON, with the gateway's
    # reason beside them, which names the URA (an administrator's walkthrough: "That already exists" alone
    # left them guessing what did)
    await page.get_by_label("URA").fill(ura)
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Category").select_option(index=1)
    await page.get_by_label("FHIR endpoint").fill(f"https://{ura}.example/fhir")
    await page.get_by_role("button", name="Register member").click()
    await expect(page.get_by_role("alert")).to_contain_text("That already exists.")
    await expect(page.get_by_role("alert")).to_contain_text(f"member {ura} is already registered")
    await expect(page.get_by_role("alert")).not_to_contain_text("resourceType")


async def test_an_admin_changes_a_members_address_capacity_and_token_in_the_page(
    page: Page, live_gateway: LiveGateway
) -> None:
    """A vendor move: the member's new FHIR address and token, and its capacity, changed in the page;
    only what changed is sent, the token never shows again, and a refused change says why."""
    await open_console(page, "admin")
    ura = f"{uuid.uuid4().int % 10**8:08d}"
    name = f"Apotheek {ura}"
    token = await person_token(page)
    member = {"ura": ura, "name": name, "category": "apotheken", "endpoint": f"https://{ura}.example/fhir"}
    assert (await console_api(live_gateway, token, "POST", "members", json=member)).status_code == 201
    await page.get_by_role("link", name="Members").click()
    row = page.locator(f"#members-table tr[data-ura='{ura}']")
    await row.get_by_role("button", name="change").click()
    await expect(page.get_by_label("Name", exact=True).first).to_be_focused()
    form = page.locator("#member-edit-form")
    await form.get_by_label("FHIR endpoint").fill("ftp://nowhere.example/fhir")
    await form.get_by_role("button", name="Save the changes").click()
    # refused by the gateway, in plain words with the detail under them, and nothing is stored
    await expect(page.get_by_role("alert")).to_contain_text("the details are not right")
    await expect(page.get_by_role("alert")).to_contain_text("is not an http(s) URL")
    listed = (await console_api(live_gateway, token, "GET", "members")).json()["members"]
    assert next(m for m in listed if m["ura"] == ura)["endpoint"] == member["endpoint"]
    await form.get_by_label("FHIR endpoint").fill(f"https://new-{ura}.example/fhir")
    await form.get_by_label("Pulls at a time").fill("3")
    await form.get_by_label("Timeout (seconds)").fill("7.5")
    await form.get_by_label(re.compile("Authentication to the member's server")).select_option("bearer")
    secret = f"k-{secrets.token_hex(12)}"
    await form.get_by_label("New token").fill(secret)
    sent: list[dict[str, Any]] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.method == "PATCH" else None)
    await form.get_by_role("button", name="Save the changes").click()
    await expect(page.get_by_text(f"{name} is changed.")).to_be_visible()
    await expect(page.locator("#member-edit-form")).to_have_count(0)
    await expect(row.locator("td").nth(3)).to_have_text(f"https://new-{ura}.example/fhir")
    # the table shows how the gateway reaches the member now: the kind of credentials, never the secret
    await expect(row.locator("td").nth(4)).to_have_text("static token · waits 7.5 s · 3 at a time")
    assert sent == [
        {
            "endpoint": f"https://new-{ura}.example/fhir",
            "timeout": 7.5,
            "max_pulls": 3,
            "auth": {"kind": "bearer", "token": secret},
        }
    ]
    listed = (await console_api(live_gateway, token, "GET", "members")).json()["members"]
    shown = next(m for m in listed if m["ura"] == ura)
    assert (shown["max_pulls"], shown["auth"]) == (3, "bearer")
    # the token is never shown again: the form offers to keep it, and the page holds it nowhere
    await row.get_by_role("button", name="change").click()
    await expect(form.get_by_label(re.compile("now: static token"))).to_have_value("keep")
    assert secret not in await page.content()
    await form.get_by_label("Pulls at a time").fill("")  # back to the gateway's default
    await form.get_by_role("button", name="Save the changes").click()
    await expect(page.get_by_text(f"{name} is changed.")).to_be_visible()
    assert sent[-1] == {"max_pulls": None}
    await expect(row.locator("td").nth(4)).to_have_text("static token · waits 7.5 s")
    # a move to another server with the token "kept as it is" is refused: the token would follow unasked
    await row.get_by_role("button", name="change").click()
    await form.get_by_label("FHIR endpoint").fill(f"https://third-{ura}.example/fhir")
    await form.get_by_role("button", name="Save the changes").click()
    await expect(page.get_by_role("alert")).to_contain_text("moves to another server")
    auth = form.get_by_label(re.compile("Authentication to the member's server"))
    await auth.select_option("keep-moved")
    await form.get_by_role("button", name="Save the changes").click()
    await expect(page.get_by_text(f"{name} is changed.")).to_be_visible()
    assert sent[-1] == {"endpoint": f"https://third-{ura}.example/fhir", "auth": {"kind": "keep"}}
    listed = (await console_api(live_gateway, token, "GET", "members")).json()["members"]
    assert next(m for m in listed if m["ura"] == ura)["max_pulls"] is None
    # a member reached over plain http on another machine is named on the health overview
    other = f"{uuid.uuid4().int % 10**8:08d}"
    clear = {"ura": other, "name": f"Praktijk {other}", "category": "huisartsen",
             "endpoint": f"http://ehr-{other}.example/fhir"}  # fmt: skip
    assert (await console_api(live_gateway, token, "POST", "members", json=clear)).status_code == 201
    await page.get_by_role("link", name="Health").click()
    await expect(page.locator("#plain-http-members")).to_contain_text(
        f"Praktijk {other} ({other}): http://ehr-{other}.example/fhir"
    )


async def test_the_endpoint_hint_says_what_the_form_accepts(page: Page) -> None:
    """https is what production uses, but the gateway (and `rzcp members add`) take an http endpoint as well,
    as a test set-up on loopback has: the hint says so, and such an endpoint is registered."""
    await open_console(page, "admin")
    await page.get_by_role("link", name="Members").click()
    endpoint = page.get_by_label("FHIR endpoint")
    await expect(endpoint).to_have_accessible_description(re.compile("https in production; http is accepted"))
    ura = f"{uuid.uuid4().int % 10**8:08d}"
    await page.get_by_label("URA").fill(ura)
    await page.get_by_label("Name").fill(f"Testpraktijk {ura}")
    await page.get_by_label("Category").select_option(index=1)
    await endpoint.fill("http://127.0.0.1:9/fhir")
    await page.get_by_role("button", name="Register member").click()
    await expect(page.get_by_text(f"Testpraktijk {ura} ({ura}) is registered.")).to_be_visible()
    await page.get_by_role("button", name="Nederlands").click()
    await expect(page.get_by_label("FHIR-adres")).to_have_accessible_description(
        re.compile("https in productie; http wordt ook geaccepteerd")
    )


async def test_a_login_error_in_a_link_shows_no_text_from_the_link(page: Page) -> None:
    """Anyone can send a link to the console with an error description of their choosing: without this tab's
    own pending login (the state), it only says that logging in did not work."""
    await page.goto(
        "/admin/?error=access_denied&error_description=Call%200900-1234%20to%20unlock%20your%20account&state=bogus"
    )
    await expect(page.get_by_role("alert")).to_have_text("Inloggen is niet gelukt. Probeer het opnieuw.")
    assert "0900" not in await page.locator("body").inner_text()
    assert "error_description" not in page.url  # nor does the text stay in the address bar


async def register_client(page: Page, system: SystemClient, *, paste: bool, tmp_path: Path) -> None:
    jwks = json.dumps({"keys": [system.key.as_dict(private=False)]})
    await page.get_by_label("Client id").fill(system.client_id)
    await page.get_by_label("Member", exact=True).select_option(system.member_ura)
    if paste:
        await page.get_by_label("JWKS", exact=True).fill(jwks)
    else:
        path = tmp_path / f"{system.client_id}.jwks.json"
        path.write_text(jwks)
        await page.get_by_label("Or upload a JWKS file").set_input_files(str(path))
        await expect(page.get_by_label("JWKS", exact=True)).to_have_value(jwks)
    await page.get_by_role("button", name="Register client").click()
    await expect(page.get_by_text(f"{system.client_id} is registered.")).to_be_visible()
    await expect(page.locator(f"#clients-table tr[data-client='{system.client_id}']")).to_contain_text(
        "active"
    )


async def pull_traffic(gateway: LiveGateway) -> dict[str, Any]:
    """Real exchange traffic: one member announces a patient, another pulls the patient's data twice (the
    region's default, without a consent, is to deny), a system without patient scopes is refused, and a
    break-the-glass pull is tried (refused unless the region's policy allows emergencies)."""
    holder = await gateway.register_system()
    asker = await gateway.register_system()
    bsn = new_bsn()
    practitioner = f"9{secrets.randbelow(10**8):08d}"
    async with aclosing(await gateway.system_http(holder)) as http:
        answer = await http.post(
            "/fhir/Patient/$announce",
            json={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "identifier", "valueIdentifier": {"system": BSN_SYSTEM, "value": bsn}},
                    {"name": "patient", "valueString": f"local-{bsn}"},
                ],
            },
            headers={"Content-Type": "application/fhir+json"},
        )
        assert answer.status_code == 200, answer.text
        patient = answer.json()["parameter"][0]["valueReference"]["reference"]
    async with aclosing(await gateway.system_http(asker)) as http:
        http.headers["X-Acting-Practitioner"] = f"{UZI_SYSTEM}|{practitioner}"
        for _ in range(2):
            pulled = await http.get(f"/fhir/{patient}/$everything")
            assert pulled.status_code == 200, pulled.text
        emergency = await http.get(
            f"/fhir/{patient}/$everything",
            headers={"X-Purpose-Of-Use": "ETREAT", "X-Break-Glass-Reason": "unconscious at the ER"},
        )
    outsider = await gateway.register_system(scope="system/Organization.rs")
    async with aclosing(await gateway.system_http(outsider, scope="system/Organization.rs")) as http:
        assert (await http.get("/fhir/Patient", params={"_count": "1"})).status_code == 403
    return {
        "bsn": bsn,
        "patient": patient,
        "practitioner": practitioner,
        "asker": asker.member_ura,
        "emergency_allowed": emergency.status_code == 200,
    }


async def test_an_auditor_finds_events_by_patient_and_practitioner_and_cannot_manage_members(
    page: Page, live_gateway: LiveGateway
) -> None:
    traffic = await pull_traffic(live_gateway)
    await open_console(page, "auditor")
    assert await nav_links(page) == ["Audit search", "Integrity", "Charts"]

    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    await page.get_by_label("Patient's BSN").fill(traffic["bsn"])
    await page.get_by_role("button", name="Search", exact=True).click()
    rows = page.locator("#audit-table tbody tr")
    await expect(rows.first).to_be_visible()
    assert urls and not [url for url in urls if traffic["bsn"] in url]  # never in a URL (proxy logs)
    for text in await rows.all_inner_texts():
        assert traffic["patient"] in text
    purposes = await page.locator("#audit-table tbody td:nth-child(7)").all_inner_texts()
    assert any(p.startswith("treatment") for p in purposes), purposes  # the purpose in words, not TREAT
    assert not any("TREAT" in p for p in purposes), purposes
    assert traffic["bsn"] not in await page.locator("#audit-results").inner_text()
    await screenshot(page, "console-audit-search")

    await page.get_by_role("button", name="Clear").click()
    await page.get_by_label("Practitioner").fill(traffic["practitioner"])
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(rows.first).to_be_visible()
    texts = await rows.all_inner_texts()
    assert len(texts) >= 2
    assert all(traffic["practitioner"] in text for text in texts)

    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Export as CSV").click()
    download = await waiting.value
    assert download.suggested_filename.endswith(".csv")
    lines = Path(await download.path()).read_text().strip().splitlines()
    assert len(lines) == len(texts) + 1  # a header row and the same events as on screen

    await rows.first.get_by_role("link", name="Open").click()
    await expect(page.get_by_role("heading", name="Decision and consent")).to_be_visible()
    await expect(page.locator("#view")).to_contain_text(traffic["practitioner"])
    await screenshot(page, "console-event")
    await page.get_by_role("link", name="← Back to the search results").click()
    await expect(rows.first).to_be_visible()  # the search is still there

    await page.get_by_role("link", name="Integrity").click()
    await page.get_by_role("button", name="Verify now").click()
    await expect(page.locator("#verify-last .verify-result")).to_have_attribute("data-ok", "true")
    await expect(page.locator("#verify-last")).to_contain_text("dev:auditor")
    await screenshot(page, "console-verify")

    await page.evaluate("location.hash = '#members'")
    await expect(page.get_by_text("That section is not part of your role.")).to_be_visible()
    await expect(page.locator("#member-form")).to_have_count(0)
    token = await person_token(page)
    assert (await console_api(live_gateway, token, "GET", "members")).status_code == 403
    forced = await console_api(
        live_gateway,
        token,
        "POST",
        "members",
        json={"ura": "12345678", "name": "Nope", "category": "Z3", "endpoint": "https://nope.example/fhir"},
    )
    assert forced.status_code == 403


#: Chart id on the page -> how to read its series from the stats answer.
CHARTS = {
    "chart-pulls": lambda stats: stats["pulls"],
    "chart-pushes": lambda stats: stats["pushes"],
    "chart-denials": lambda stats: {"denials": stats["denials"]},
    "chart-emergencies": lambda stats: {"emergencies": stats["emergencies"]},
    "chart-failures": lambda stats: stats["upstream_failures"],
}


def nonzero_cells(days: list[str], series: dict[str, list[int]]) -> list[list[Any]]:
    """[series, day, count] for every count above zero: exactly one bar each."""
    return sorted(
        [key, day, n] for key, values in series.items() for day, n in zip(days, values, strict=True) if n
    )


async def test_the_charts_draw_the_exchange_from_real_traffic(page: Page, live_gateway: LiveGateway) -> None:
    traffic = await pull_traffic(live_gateway)
    await open_console(page, "chief")
    assert await nav_links(page) == ["Health", "Members", "Clients", "Audit search", "Integrity", "Charts"]
    await page.get_by_role("link", name="Charts").click()
    await expect(page.locator("#chart-failures svg")).to_be_visible()

    stats = (await console_api(live_gateway, await person_token(page), "GET", "audit/stats")).json()
    for chart, series_of in CHARTS.items():
        drawn = await page.locator(f"#{chart} svg rect.bar").evaluate_all(
            "rs => rs.map(r => [r.dataset.series, r.dataset.day, Number(r.dataset.value)])"
        )
        assert sorted(drawn) == nonzero_cells(stats["days"], series_of(stats)), chart
    today_pulls = page.locator(f"#chart-pulls rect.bar[data-series='{traffic['asker']}']")
    assert await today_pulls.count() == 1
    assert int(await today_pulls.get_attribute("data-value") or 0) >= 2
    assert int(await page.locator("#chart-denials").get_attribute("data-total") or 0) >= 1
    if traffic["emergency_allowed"]:
        assert int(await page.locator("#chart-emergencies").get_attribute("data-total") or 0) >= 1

    await screenshot(page, "console-charts")
    figure = page.locator("#chart-denials")
    await figure.get_by_role("button", name="Show as table").click()
    await expect(figure.locator("table.chart-data tbody tr")).to_have_count(len(stats["days"]))
    await expect(figure.get_by_role("img")).to_have_accessible_name("Denials per day")
