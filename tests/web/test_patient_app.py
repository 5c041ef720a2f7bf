"""The patient app in a real browser against a live gateway: a patient logs in, sees the preview change with
their choice, grants and revokes, finds a member's access in their log, cannot reach another patient's
consent, and can use it all on a 320 px screen; an expired session or an unreachable server is said
plainly."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
from playwright.async_api import Page, expect

from rzcp.audit.events import AuditFacts
from rzcp.exchange.directory import project
from tests.integration.conftest import new_bsn
from tests.web.conftest import LiveGateway, dev_login_patient, screenshot

FETCH = """async ([method, path, body]) => {
  const token = JSON.parse(sessionStorage.getItem("rzcp.session")).token;
  const init = {method, headers: {Authorization: `Bearer ${token}`, Accept: "application/fhir+json"}};
  if (body) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/fhir+json"; }
  const response = await fetch(path, init);
  return {status: response.status, text: await response.text()};
}"""

#: What the gateway sees once the token has lapsed: the page still holds a token, the gateway refuses it.
EXPIRE = """() => {
  const s = JSON.parse(sessionStorage.getItem("rzcp.session"));
  s.token = "expired." + s.token.split(".")[1] + ".x";
  sessionStorage.setItem("rzcp.session", JSON.stringify(s));
}"""


async def log_in(page: Page, bsn: str) -> str:
    """Through the app's own login button and the development identity provider; the patient's id."""
    await page.goto("/app/")
    await page.get_by_role("button", name="Inloggen").click()
    await dev_login_patient(page, bsn)
    await expect(page.get_by_role("heading", name="Wie mag wat zien")).to_be_visible()
    return str(await page.evaluate("JSON.parse(sessionStorage.getItem('rzcp.session')).patient"))


async def page_fetch(page: Page, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A request with the page's own token, as someone editing the request in the browser would send it."""
    return dict(await page.evaluate(FETCH, [method, path, body]))


async def decision(page: Page, category: str, resource_type: str) -> str:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "requesterCategory", "valueString": category},
            {"name": "resourceType", "valueString": resource_type},
        ],
    }
    answer = await page_fetch(page, "POST", "/fhir/Consent/$evaluate", parameters)
    assert answer["status"] == 200, answer
    return "permit" if '"valueCode":"permit"' in answer["text"] else "deny"


async def test_patient_previews_grants_revokes_and_sees_the_history(
    page: Page, live_gateway: LiveGateway
) -> None:
    await page.goto("/app/")
    await expect(page.get_by_role("button", name="Inloggen")).to_be_visible()  # no session: the login
    await screenshot(page, "patient-login")
    await log_in(page, new_bsn())
    await expect(page.get_by_text("U heeft nog geen toestemming gegeven")).to_be_visible()

    evaluations: list[str] = []  # each is a request, and a record in the trail
    page.on("request", lambda r: evaluations.append(r.url) if "$evaluate" in r.url else None)
    await page.get_by_role("link", name="Toestemming geven", exact=True).click()
    await page.get_by_label("Soort zorgverlener", exact=True).select_option("huisartsen")
    await page.get_by_label("Medicatie", exact=True).check()
    after, hidden = page.locator("#preview-after"), page.locator("#preview-not")
    await expect(page.locator("#preview-now")).to_have_text("Nu: niets.")
    await expect(after).to_have_text("Na opslaan wel: Medicatie.")
    # one call for every kind of data, as things stand and with the choice (it was one per kind: ~22)
    assert 1 <= len(evaluations) <= 4, evaluations
    await expect(hidden).to_contain_text("Laboratoriumuitslagen")
    await page.get_by_label("Allergieën").check()
    await expect(after).to_have_text("Na opslaan wel: Medicatie, Allergieën.")
    await page.get_by_label("Mag niet zien (afschermen)").check()
    await expect(after).to_have_text("Na opslaan wel: niets.")
    await page.get_by_label("Mag zien", exact=True).check()
    await expect(after).to_have_text("Na opslaan wel: Medicatie, Allergieën.")
    await screenshot(page, "patient-grant")
    await page.get_by_role("button", name="Opslaan").click()

    await expect(page.get_by_text("Opgeslagen.")).to_be_visible()
    card = page.locator("#overview-active .consent")
    await expect(card).to_have_text(
        re.compile("Mag zien — Huisartsen: Medicatie, Allergieën.*voor uw behandeling")
    )
    assert await decision(page, "huisartsen", "MedicationRequest") == "permit"
    assert await decision(page, "huisartsen", "Specimen") == "deny"  # lab data was not chosen
    await screenshot(page, "patient-overview")

    # with a consent saved, the preview is the engine's answer with the unsaved choice beside it
    await page.get_by_role("link", name="Toestemming geven", exact=True).click()
    await page.get_by_label("Soort zorgverlener", exact=True).select_option("huisartsen")
    await page.get_by_label("Mag zien", exact=True).check()
    await page.get_by_label("Laboratoriumuitslagen").check()
    await page.get_by_label("Medicatie", exact=True).uncheck()
    await page.get_by_label("Allergieën").uncheck()
    await expect(page.locator("#preview-now")).to_have_text("Nu: Medicatie, Allergieën.")
    await expect(after).to_have_text("Na opslaan wel: Medicatie, Laboratoriumuitslagen, Allergieën.")
    await page.get_by_role("link", name="Wie mag wat zien", exact=True).click()

    await card.get_by_role("button", name="Intrekken").click()
    await page.get_by_role("button", name="Ja, intrekken").click()
    await expect(page.get_by_text("De toestemming is ingetrokken.")).to_be_visible()
    await expect(page.locator("#overview-active .consent")).to_have_count(0)
    await expect(page.locator("#overview-revoked .consent")).to_contain_text("Ingetrokken")
    assert await decision(page, "huisartsen", "MedicationRequest") == "deny"

    await page.get_by_role("link", name="Geschiedenis", exact=True).click()
    versions = page.locator("#history-list .version")
    await expect(versions).to_have_count(2)
    await expect(versions.first).to_contain_text("Ingetrokken")
    await expect(versions.last).to_contain_text("Gegeven")
    await screenshot(page, "patient-history")

    # logging out ends the session at the gateway: a copy of the token is refused from then on
    token = await page.evaluate("JSON.parse(sessionStorage.getItem('rzcp.session')).token")
    assert (await page_fetch(page, "GET", "/fhir/Consent"))["status"] == 200
    await page.get_by_role("button", name="Uitloggen").click()
    await expect(page.get_by_role("button", name="Inloggen")).to_be_visible()
    # said, from any screen (from #history the change of address took it away), and nothing of the
    # patient stays in the page for the next person at the computer (it stayed, hidden)
    await expect(page.get_by_text("U bent uitgelogd.")).to_be_visible()
    await expect(page.locator("#history-list > *")).to_have_count(0)
    async with httpx.AsyncClient(base_url=live_gateway.url) as http:
        for _ in range(50):  # the page sends the revocation as it logs out; give it a moment
            copied = await http.get("/fhir/Consent", headers={"Authorization": f"Bearer {token}"})
            if copied.status_code == 401:
                break
            await asyncio.sleep(0.1)
    assert copied.status_code == 401, copied.text


async def test_a_refusal_after_a_permission_takes_effect(page: Page) -> None:
    """A patient lets GPs see their medication, then changes their mind with a refusal: GPs no longer
    see it. The refusal named no purpose and the permission named treatment, so the permission won and
    the refusal, shown as valid, changed nothing (a patient's walkthrough)."""
    await page.goto("/app/")
    await log_in(page, new_bsn())
    for effect in ("Mag zien", "Mag niet zien (afschermen)"):
        await page.get_by_role("link", name="Toestemming geven", exact=True).click()
        await page.get_by_label("Soort zorgverlener", exact=True).select_option("huisartsen")
        await page.get_by_label(effect, exact=True).check()
        await page.get_by_label("Medicatie", exact=True).check()
        if effect != "Mag zien":  # the preview says what saving will do
            await expect(page.locator("#preview-after")).to_have_text("Na opslaan wel: niets.")
        await page.get_by_role("button", name="Opslaan").click()
        await expect(page.get_by_text("Opgeslagen.")).to_be_visible()
    refusal = page.locator("#overview-active .consent", has_text="Afgeschermd")
    await expect(refusal).to_contain_text("elk toegestaan doel")
    await expect(refusal.get_by_role("heading", level=3)).to_contain_text("Afgeschermd")  # to jump between
    assert await decision(page, "huisartsen", "MedicationRequest") == "deny"

    # a double click on "yes, revoke" revokes once (it sent two PUTs, the second answered 412)
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    await refusal.get_by_role("button", name="Intrekken").click()
    # revoking a shield says what it does: the data may be seen again (it asked as for a permission)
    await expect(refusal).to_contain_text("mag deze zorgverlener deze gegevens weer zien")
    await page.get_by_role("button", name="Ja, intrekken").dblclick()
    await expect(page.get_by_text("De afscherming is ingetrokken.")).to_be_visible()
    assert len(puts) == 1, puts


async def test_a_patient_changes_until_when_a_consent_holds(page: Page) -> None:
    """A new end date is a new version of the same consent (the history keeps the old one); a date in the
    past is refused before anything is sent; no date means until the patient revokes it."""
    await log_in(page, new_bsn())
    await page.get_by_role("link", name="Toestemming geven", exact=True).click()
    await page.get_by_label("Soort zorgverlener", exact=True).select_option("huisartsen")
    await page.get_by_label("Medicatie", exact=True).check()
    # a year past what the region accepts is said at the field, before anything is sent (it was a banner
    # naming no field, shown before saving and left standing after the date was put right)
    await page.get_by_label("Tot en met (mag leeg blijven)").fill("2300-01-01")
    too_late = "Die einddatum kan niet: kies een datum tot en met 31 december 2200"
    await expect(page.locator("#preview-end")).to_contain_text(too_late)
    await page.get_by_role("button", name="Opslaan").click()
    await expect(page.locator("#grant-problem")).to_contain_text(too_late)
    await expect(page.get_by_label("Tot en met (mag leeg blijven)")).to_be_focused()
    await expect(page.locator("#notice")).to_be_hidden()
    await page.get_by_label("Tot en met (mag leeg blijven)").fill("2030-06-30")
    await expect(page.locator("#preview-after")).to_have_text("Na opslaan wel: Medicatie.")
    await page.get_by_role("button", name="Opslaan").click()
    card = page.locator("#overview-active .consent")
    await expect(card).to_contain_text("2030")
    consent_id = await card.get_attribute("data-consent")

    async def stored() -> dict[str, Any]:
        answer = await page_fetch(page, "GET", f"/fhir/Consent/{consent_id}")
        assert answer["status"] == 200, answer
        return dict(json.loads(answer["text"]))

    sentence = await page.locator(f"#consent-{consent_id}-headline").inner_text()
    change = card.get_by_role("button", name="Einddatum wijzigen")
    await expect(change).to_have_accessible_description(sentence)
    await change.click()
    end = card.get_by_label("Geldt tot en met (leeg: tot u de afspraak intrekt)")
    await expect(end).to_be_focused()
    await expect(end).to_have_value("2030-06-30")
    await end.fill("2001-01-01")
    await card.get_by_role("button", name="Opslaan").click()
    await expect(card.get_by_role("alert")).to_have_text("De einddatum moet vandaag of later zijn.")
    await end.fill("2300-01-01")
    await card.get_by_role("button", name="Opslaan").click()
    await expect(card.get_by_role("alert")).to_contain_text(too_late)
    assert (await stored())["meta"]["versionId"] == "1"  # nothing was sent

    await end.fill("2031-03-15")
    await card.get_by_role("button", name="Opslaan").click()
    await expect(page.get_by_text("De einddatum is gewijzigd.")).to_be_visible()
    await expect(card).to_contain_text("2031")
    consent = await stored()
    assert consent["meta"]["versionId"] == "2" and consent["provision"]["period"] == {"end": "2031-03-15"}
    assert await decision(page, "huisartsen", "MedicationRequest") == "permit"

    await card.get_by_role("button", name="Einddatum wijzigen").click()
    await card.get_by_label("Geldt tot en met (leeg: tot u de afspraak intrekt)").fill("")
    await card.get_by_role("button", name="Opslaan").click()
    await expect(page.get_by_text("De afspraak geldt nu tot u haar intrekt.")).to_be_visible()
    await expect(card).to_contain_text("Geen einddatum")
    consent = await stored()
    assert consent["meta"]["versionId"] == "3" and "period" not in consent["provision"]

    await card.get_by_role("link", name="Geschiedenis van deze afspraak").click()
    await expect(page.locator("#history-list .version")).to_have_count(3)


async def test_one_organisation_and_a_members_access_in_the_log(
    page: Page, live_gateway: LiveGateway
) -> None:
    member = await live_gateway.register_system(category="Z3")

    async def directory_entry() -> None:
        async with live_gateway.runtime.db.write() as conn:
            await project(conn, live_gateway.runtime.registry, member.member_ura)

    await live_gateway.run(directory_entry())
    patient = await log_in(page, new_bsn())
    await page.get_by_role("link", name="Toestemming geven", exact=True).click()
    await page.get_by_label("Eén organisatie").check()
    # a part of the name that is not its start finds it too (as "Rijnstad" finds "Ziekenhuis Rijnstad")
    await page.get_by_label("Zoek een organisatie op naam").fill(member.member_ura[2:])
    await page.get_by_role("button", name="Zoeken").click()
    await page.get_by_label(f"Member {member.member_ura}", exact=False).check()
    await page.get_by_label("Alle gegevens").check()
    await page.get_by_label("Tot en met").fill("2099-12-31")
    await expect(page.locator("#preview-after")).to_contain_text("Medicatie, Laboratoriumuitslagen")
    await page.get_by_role("button", name="Opslaan").click()
    await expect(page.locator("#overview-active .consent")).to_contain_text(
        f"Member {member.member_ura}: al uw gegevens"
    )

    http = await live_gateway.system_http(member)
    try:
        looked = await http.get(f"/fhir/Patient/{patient}")
    finally:
        await http.aclose()
    assert looked.status_code in (200, 403, 404), looked.text
    await page.get_by_role("link", name="Wie keek mee", exact=True).click()
    entry = page.locator("#log-list .access").first
    await expect(entry).to_contain_text(f"Member {member.member_ura}")  # the organisation by its name
    await expect(entry).to_contain_text("Noodsituatie")
    await page.get_by_role("button", name="Switch to English").click()
    await expect(page.get_by_role("heading", name="Who looked at your data")).to_be_visible()
    await expect(page.locator("#log-list .access").first).to_contain_text("Emergency")
    await screenshot(page, "patient-access-log")
    # an address of no screen (a new user typed #access-log) says so, over the overview, not silently
    await page.evaluate("location.hash = '#access-log'")
    await expect(page.get_by_text("That page does not exist; this is your overview.")).to_be_visible()
    await expect(page.locator("#view-overview")).to_be_visible()


async def test_every_access_in_the_log_is_within_reach(page: Page, live_gateway: LiveGateway) -> None:
    """The log showed the 50 newest of 55 accesses and no way to the others (a patient's walkthrough)."""
    patient = await log_in(page, new_bsn())

    async def accesses() -> None:
        for i in range(53):
            await live_gateway.runtime.audit.record(
                AuditFacts(
                    interaction="read",
                    status=200,
                    correlation_id=f"looked-{i}",
                    kind="system",
                    client_id="his-test",
                    member_ura="00000001",
                    patient=f"Patient/{patient}",
                    resource_type="Patient",
                    purpose="TREAT",
                )
            )

    await live_gateway.run(accesses())
    await page.get_by_role("link", name="Wie keek mee", exact=True).click()
    entries = page.locator("#log-list .access")
    await expect(entries).to_have_count(50)
    await page.get_by_role("button", name="Meer tonen (3 ouder)").click()
    await expect(entries).to_have_count(53)
    await expect(page.locator("#log-more")).to_have_count(0)
    await expect(entries.nth(50)).to_be_focused()  # the keyboard goes on where the new ones begin


async def test_another_patients_consent_cannot_be_reached(page: Page, live_gateway: LiveGateway) -> None:
    admin = await live_gateway.register_system(role="admin")
    http = await live_gateway.system_http(admin)
    try:
        other = (await http.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"]
        published = (await http.get("/consent/policy")).json()
        scope_system, scope_code = published["systems"]["scope"].split("|")
        consent = {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": scope_system, "code": scope_code}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{other}"},
            "policyRule": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]
            },
            "sourceAttachment": {"title": "Signed form"},
            "provision": {"type": "deny"},
        }
        created = await http.post("/fhir/Consent", json=consent)
        assert created.status_code == 201, created.text
        theirs = created.json()
    finally:
        await http.aclose()

    await log_in(page, new_bsn())
    await page.goto("/app/#history/%3Cimg%3E")  # a malformed id: not theirs either, nothing was being saved
    await expect(page.get_by_role("alert")).to_have_text("Deze toestemming bestaat niet of is niet van u.")
    await page.goto(f"/app/#history/{theirs['id']}")
    await expect(page.get_by_text("Deze toestemming bestaat niet of is niet van u.")).to_be_visible()
    await expect(page.locator("#history-list .card")).to_have_count(0)
    await expect(page.get_by_text("Afgeschermd voor")).to_have_count(0)

    read = await page_fetch(page, "GET", f"/fhir/Consent/{theirs['id']}")
    assert read["status"] == 404
    assert "OperationOutcome" in read["text"] and "provision" not in read["text"]
    history = await page_fetch(page, "GET", f"/fhir/Consent/{theirs['id']}/_history")
    assert history["status"] == 404
    search = await page_fetch(page, "GET", f"/fhir/Consent?patient=Patient/{other}")
    assert search["status"] in (403, 404) or theirs["id"] not in search["text"]
    revoke = await page_fetch(page, "PUT", f"/fhir/Consent/{theirs['id']}", {**theirs, "status": "inactive"})
    assert revoke["status"] in (403, 404)
    assert (await page_fetch(page, "DELETE", f"/fhir/Consent/{theirs['id']}"))["status"] in (403, 404)


async def test_a_refusal_of_data_from_a_kind_of_organisation_is_described_and_revoked_safely(
    page: Page,
) -> None:
    """A consent written by another app that shields the data mental health care holds (the custodian, CST),
    not the patient's data from everyone; revoking it asks first, with "no" as the safe default."""
    patient = await log_in(page, new_bsn())
    policy = json.loads((await page_fetch(page, "GET", "/consent/policy"))["text"])
    systems = policy["systems"]
    scope_system, scope_code = systems["scope"].split("|")
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": scope_system, "code": scope_code}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]
        },
        "provision": {
            "type": "deny",
            "actor": [
                {
                    "role": {"coding": [{"system": systems["participation"], "code": "CST"}]},
                    "reference": {
                        "type": "Group",
                        "identifier": {"system": systems["organisation_category"], "value": "ggz"},
                    },
                }
            ],
        },
    }
    created = await page_fetch(page, "POST", "/fhir/Consent", consent)
    assert created["status"] == 201, created
    await page.reload()
    card = page.locator("#overview-active .consent")
    sentence = "Gegevens van Geestelijke gezondheidszorg (GGZ): voor niemand zichtbaar"
    await expect(card.locator(".headline")).to_contain_text(sentence)
    await expect(card).not_to_contain_text("iedereen")

    revoke = card.get_by_role("button", name="Intrekken")
    await expect(revoke).to_have_accessible_description(sentence)
    history = card.get_by_role("link", name="Geschiedenis van deze afspraak")
    await expect(history).to_have_accessible_description(sentence)
    await revoke.click()
    await expect(card.get_by_role("button", name="Nee, laten staan")).to_be_focused()
    await page.keyboard.press("Enter")  # Enter twice: the consent stays
    await expect(revoke).to_be_focused()
    await expect(card.locator(".tag")).to_have_text("Geldig")

    await revoke.click()
    await card.get_by_role("button", name="Ja, intrekken").click()
    revoked = page.locator("#overview-revoked .consent")
    await expect(revoked).to_contain_text(sentence)
    await expect(revoked).to_contain_text("Ingetrokken op")
    await page.get_by_role("button", name="Switch to English").click()
    await expect(revoked.locator(".headline")).to_contain_text(
        "Data from Mental health care (GGZ): shown to no one"
    )


async def test_small_screen_unreachable_server_and_expired_session(page: Page) -> None:
    await page.set_viewport_size({"width": 320, "height": 740})
    await log_in(page, new_bsn())
    for link, control in (
        ("Toestemming geven", "Opslaan"),
        ("Wie keek mee", "Uitloggen"),
        ("Wie mag wat zien", "Toestemming geven of afschermen"),
    ):
        await page.get_by_role("link", name=link, exact=True).click()
        await expect(
            page.get_by_role("button", name=control).or_(page.get_by_role("link", name=control))
        ).to_be_visible()
        width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{link}: the page scrolls sideways at 320 px ({width})"
        for name in ("Wie mag wat zien", "Toestemming geven", "Geschiedenis", "Wie keek mee"):
            await expect(page.get_by_role("link", name=name, exact=True)).to_be_in_viewport()
    # the button-like link wraps as one box at 320 px, not as a background broken across lines
    add = page.get_by_role("link", name="Toestemming geven of afschermen")
    assert await add.evaluate("a => a.getClientRects().length") == 1
    await page.get_by_role("link", name="Toestemming geven", exact=True).click()
    await screenshot(page, "patient-small-screen")

    await page.route("**/fhir/**", lambda route: route.abort())
    await page.get_by_role("link", name="Wie keek mee", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text(re.compile("De server is niet bereikbaar"))
    await page.unroute("**/fhir/**")

    await page.evaluate(EXPIRE)
    await page.get_by_role("link", name="Geschiedenis", exact=True).click()
    await expect(page.get_by_text("Uw sessie is verlopen. Log opnieuw in om verder te gaan.")).to_be_visible()
    await expect(page.get_by_role("button", name="Opnieuw inloggen")).to_be_visible()
    await expect(page.get_by_role("button", name="Opnieuw inloggen")).to_be_focused()
    text = await page.locator("body").inner_text()
    assert "{" not in text and "OperationOutcome" not in text and "401" not in text
    await page.reload()  # the session is gone for good: still the plain message, not an empty page
    await expect(page.get_by_text("Uw sessie is verlopen.", exact=False)).to_be_visible()
    await screenshot(page, "patient-session-expired")
