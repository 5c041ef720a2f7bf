"""The console's API over HTTP: who may do what, members and clients with their effect at once, the
audit search, detail, export, verification, charts, and the console's own record of every call."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from rzcp.admin import verify_runs
from rzcp.admin.audit_views import PRACTITIONER_SYSTEMS
from rzcp.audit.events import AuditFacts, Decision, Practitioner
from rzcp.audit.search import search_events
from rzcp.audit.verify import VerifyResult
from rzcp.auth import registry
from rzcp.exchange.outbox import DeliveryReport
from rzcp.exchange.worker import audit_delivery
from rzcp.membersim.bsn import derive_test_bsn
from rzcp.store.resources import ResourceStore
from tests.admin.conftest import as_bearer, minted_person_token, new_patient, person_token
from tests.conftest import PRACTITIONER, SystemClient, fetch_token, new_key, register_system


def outcome_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def new_ura() -> str:
    return f"{uuid.uuid4().int % 10**8:08d}"


async def console_records(http: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    """The console's own records of `action`, newest first (read through the export, as an auditor)."""
    response = await http.get("/admin/api/audit/export", params={"format": "ndjson", "since": "2020-01-01"})
    events = [orjson.loads(line) for line in response.content.splitlines()]
    return [
        e
        for e in events
        if e["type"]["code"] == "console" and any(x.get("description") == action for x in e["entity"])
    ]


# --- who may do what --------------------------------------------------------------------------------


async def test_me_names_the_person_their_roles_and_second_factor(chief: httpx.AsyncClient) -> None:
    response = await chief.get("/admin/api/me")
    assert response.status_code == 200
    assert response.json() == {"subject": "dev:chief", "roles": ["admin", "auditor"], "second_factor": True}


async def test_roles_decide_and_a_person_needs_the_second_factor(
    console_app: Any, ada: httpx.AsyncClient, otto: httpx.AsyncClient
) -> None:
    outcome_of(await otto.get("/admin/api/members"), 403)
    outcome_of(await otto.post("/admin/api/members", json={"ura": new_ura()}), 403)
    outcome_of(await ada.get("/admin/api/audit/events"), 403)
    assert (await ada.get("/admin/api/members")).status_code == 200
    assert (await otto.get("/admin/api/audit/events")).status_code == 200
    one_factor = await minted_person_token(console_app, "dev:ada", ["admin"], ["pwd"])
    async with as_bearer(console_app, one_factor) as http:
        assert (await http.get("/admin/api/me")).json()["second_factor"] is False
        outcome_of(await http.get("/admin/api/members"), 403)
    # found by a security test: the same person's token for another app (here the patient app's client,
    # scoped to the directory) is no console session, whatever the person's roles
    elsewhere = await minted_person_token(
        console_app, "dev:chief", ["admin", "auditor"], ["pwd", "otp"],
        client_id="rzcp-patient-app", scope="user/Organization.rs",
    )  # fmt: skip
    async with as_bearer(console_app, elsewhere) as http:
        outcome_of(await http.get("/admin/api/members"), 403)
        outcome_of(await http.get("/admin/api/audit/events"), 403)
        outcome_of(await http.post(f"/admin/api/members/{new_ura()}/suspend"), 403)
    member = await person_token(console_app, "mia", otp=False)
    async with as_bearer(console_app, member) as http:
        outcome_of(await http.get("/admin/api/clients"), 403)
    async with as_bearer(console_app, None) as http:
        outcome_of(await http.get("/admin/api/me"), 401)
    async with as_bearer(console_app, "not-a-token") as http:
        outcome_of(await http.get("/admin/api/audit/events"), 401)


async def test_bad_input_is_a_400_operation_outcome(chief: httpx.AsyncClient) -> None:
    outcome_of(await chief.post("/admin/api/members", json={"ura": "12", "name": "x"}), 400)
    outcome_of(
        await chief.post("/admin/api/members", content=b"[1]", headers={"content-type": "application/json"}),
        400,
    )
    outcome_of(
        await chief.post("/admin/api/members", content=b"{", headers={"content-type": "application/json"}),
        400,
    )
    bad = [{"bsn": "123456789"}, {"member": "abc"}, {"since": "yesterday"}, {"outcome": "maybe"},
           {"emergency": "perhaps"}, {"count": "0"}, {"page": "!!"}, {"purpose": "treat me"},
           {"purpose": "TRAET"}, {"member": "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668"}]  # fmt: skip
    for params in bad:
        outcome_of(await chief.post("/admin/api/audit/events/_search", json=params), 400)
    outcome_of(await chief.get("/admin/api/audit/export", params={"format": "xml"}), 400)
    outcome_of(
        await chief.get("/admin/api/audit/stats", params={"since": "2026-02-01", "until": "2026-01-01"}), 400
    )
    outcome_of(await chief.get("/admin/api/audit/events/no-such-event"), 404)
    outcome_of(await chief.post("/admin/api/members/00000000/suspend"), 404)
    outcome_of(await chief.post("/admin/api/clients/nobody/revoke"), 404)
    # an operator's walkthrough: a mistyped field at registration was silently lost, an unknown role was
    # a 403 naming it as a role
    ura = new_ura()
    member = {
        "ura": ura,
        "name": "Praktijk Typo",
        "category": "huisartsen",
        "endpoint": "https://t.example/fhir",
    }
    mistyped = {**member, "max_pull": 2, "timout": 3}
    typo = outcome_of(await chief.post("/admin/api/members", json=mistyped), 400)
    assert "unknown field(s) max_pull, timout" in typo["issue"][0]["diagnostics"]
    assert ura not in {m["ura"] for m in (await chief.get("/admin/api/members")).json()["members"]}
    client = {"client_id": "typo-client", "member_ura": ura, "scope": "system/*.rs", "jwks": {"keys": []}}
    outcome_of(await chief.post("/admin/api/clients", json={**client, "extra": 1}), 400)
    king = outcome_of(await chief.post("/admin/api/clients", json={**client, "role": "king"}), 400)
    assert king["issue"][0]["diagnostics"] == "role is member, auditor, admin"
    # the console's API is plain JSON, and its 415 says so (it asked for FHIR JSON)
    plain = outcome_of(
        await chief.post("/admin/api/members", content=b"{}", headers={"content-type": "text/plain"}), 415
    )
    assert plain["issue"][0]["diagnostics"] == "text/plain is not supported: send application/json"


# --- members and clients ----------------------------------------------------------------------------


async def test_register_a_member_and_client_then_revoke_and_suspend_at_once(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    categories = (await chief.get("/admin/api/categories")).json()["categories"]
    assert {"code": "huisartsen", "name": "Huisartsen"} in categories
    ura = new_ura()
    member = {
        "ura": ura,
        "name": "Praktijk Test",
        "category": "huisartsen",
        "endpoint": f"https://{ura}.example/fhir",
    }
    created = await chief.post("/admin/api/members", json=member)
    assert created.status_code == 201, created.text
    assert created.json() == {
        **member,
        "adapter": "fhir-rest",
        "status": "active",
        "health": {"state": "unknown", "failures_24h": 0, "last_failure": None},
        **{"agb": None, "timeout": 5.0, "max_pulls": None, "auth": "none"},
    }
    outcome_of(await chief.post("/admin/api/members", json=member), 409)
    # a development gateway (this one) registers a member over plain http; production refuses it
    # (tests/auth/test_https_only.py), and the registry refuses it when not told it runs in development
    plain = {**member, "ura": new_ura(), "endpoint": "http://ehr.example/fhir"}
    assert (await chief.post("/admin/api/members", json=plain)).status_code == 201
    # found by review: a 100,000-character name, a category the policy does not know, an adapter that is
    # not installed, a control character: each refused with a clear 400 (nothing stored)
    for bad in (
        {"name": "A" * 100_000},
        {"category": "nope"},
        {"adapter": "../../etc"},
        {"name": "Praktijk\u0000Test"},
    ):
        other = {**member, "ura": new_ura(), **bad}
        outcome_of(await chief.post("/admin/api/members", json=other), 400)
        listed = (await chief.get("/admin/api/members")).json()["members"]
        assert other["ura"] not in {m["ura"] for m in listed}
    by_type = {**member, "ura": new_ura(), "category": "Z3"}  # a national type code of the policy's
    assert (await chief.post("/admin/api/members", json=by_type)).status_code == 201
    listed = (await chief.get("/admin/api/members")).json()["members"]
    assert next(m for m in listed if m["ura"] == ura)["status"] == "active"
    key = new_key()
    client = {"client_id": f"ehr-{ura}", "member_ura": ura, "scope": "system/*.rs", "role": "member",
              "jwks": {"keys": [key.as_dict(private=False)]}}  # fmt: skip
    added = await chief.post("/admin/api/clients", json=client)
    assert added.status_code == 201, added.text
    assert added.json() == {
        **{k: client[k] for k in ("client_id", "member_ura", "scope", "role")},
        **{"jwks_url": None, "kids": [key.kid], "status": "active"},
    }
    private = {**client, "jwks": {"keys": [key.as_dict(private=True)]}, "client_id": f"x-{ura}"}
    outcome_of(await chief.post("/admin/api/clients", json=private), 400)
    typo = {**client, "client_id": f"t-{ura}", "scope": "system/Pateint.rs"}  # no such type: a typo
    assert (
        "Pateint"
        in outcome_of(await chief.post("/admin/api/clients", json=typo), 400)["issue"][0]["diagnostics"]
    )
    jwks_url = {"jwks": None, "jwks_url": "https://keys.example/jwks.json"}
    by_url = await chief.post("/admin/api/clients", json={**client, "client_id": f"u-{ura}", **jwks_url})
    assert by_url.status_code == 201 and by_url.json()["jwks_url"] == "https://keys.example/jwks.json"

    system = SystemClient(f"ehr-{ura}", ura, key)
    async with as_bearer(console_app, None) as http:
        token = await fetch_token(http, system, "system/*.rs")
        http.headers["Authorization"] = f"Bearer {token}"
        http.headers["X-Acting-Practitioner"] = PRACTITIONER
        assert (await http.get(f"/fhir/Organization/ura-{ura}")).status_code == 200
        revoked = await chief.post(f"/admin/api/clients/ehr-{ura}/revoke")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert (await http.get(f"/fhir/Organization/ura-{ura}")).status_code == 401
    second = await register_system(console_app)
    async with as_bearer(console_app, None) as http:
        token = await fetch_token(http, second, "system/*.cruds")
        http.headers["Authorization"] = f"Bearer {token}"
        assert (await http.get("/fhir/Organization", params={"_count": "1"})).status_code == 200
        suspended = await chief.post(f"/admin/api/members/{second.member_ura}/suspend")
        assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
        assert (await http.get("/fhir/Organization", params={"_count": "1"})).status_code == 401
    clients = (await chief.get("/admin/api/clients")).json()["clients"]
    assert next(c for c in clients if c["client_id"] == second.client_id)["status"] == "member-suspended"
    endpoint = await chief.get("/admin/api/members")
    assert (
        next(m for m in endpoint.json()["members"] if m["ura"] == second.member_ura)["status"] == "suspended"
    )
    added_records = [e for e in await console_records(chief, "members.add") if ("ura", ura) in _details(e)]
    assert [e["outcome"] for e in added_records] == ["4", "0"]  # the 409, then the registration
    assert {_who(e) for e in added_records} == {"dev:chief"}


async def test_an_admin_changes_a_members_endpoint_and_its_secret_is_never_shown(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    ura = new_ura()
    member = {"ura": ura, "name": "Praktijk Oud", "category": "huisartsen",
              "endpoint": f"https://{ura}.example/fhir", "max_pulls": 2}  # fmt: skip
    created = await chief.post("/admin/api/members", json=member)
    assert created.status_code == 201, created.text
    assert created.json()["max_pulls"] == 2
    secret = f"member-token-{uuid.uuid4().hex}"
    change = {
        "name": "Praktijk Nieuw",
        "endpoint": f"https://new-{ura}.example/fhir",
        "agb": "01234567",
        "timeout": 12.5,
        "max_pulls": None,  # back to the gateway's default
        "auth": {"kind": "bearer", "token": secret},
    }
    changed = await chief.patch(f"/admin/api/members/{ura}", json=change)
    assert changed.status_code == 200, changed.text
    shown = changed.json()
    assert {k: shown[k] for k in ("name", "endpoint", "agb", "timeout", "max_pulls", "auth")} == {
        **{k: change[k] for k in ("name", "endpoint", "agb", "timeout", "max_pulls")},
        "auth": "bearer",
    }
    assert secret not in changed.text
    # the directory members read follows: the Endpoint's address, the Organization's name and AGB
    system = await register_system(console_app)
    async with as_bearer(console_app, None) as http:
        http.headers["Authorization"] = f"Bearer {await fetch_token(http, system, 'system/*.rs')}"
        http.headers["X-Acting-Practitioner"] = PRACTITIONER
        endpoint = (await http.get(f"/fhir/Endpoint/ep-{ura}")).json()
        organization = (await http.get(f"/fhir/Organization/ura-{ura}")).json()
    assert endpoint["address"] == change["endpoint"] and secret not in orjson.dumps(endpoint).decode()
    assert organization["name"] == "Praktijk Nieuw"
    assert {"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "01234567"} in organization[
        "identifier"
    ]
    # bad changes are refused with a 400 naming the problem, and change nothing
    for bad, named in (
        ({"max_pulls": 0}, "max_pulls"),
        ({"max_pulls": 2.5}, "max_pulls"),
        ({"timeout": 500}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"agb": "12"}, "AGB"),
        ({"endpoint": "ftp://x.example/fhir"}, "endpoint"),
        # found by review: the first two were 500s, the last two were stored
        ({"endpoint": "https://[::1"}, "valid host and port"),
        ({"endpoint": "https://[::1", "auth": {"kind": "bearer", "token": secret}}, "valid host and port"),
        ({"endpoint": "https://x.example:99999/fhir"}, "valid host and port"),
        ({"endpoint": "https://user:pw@x.example/fhir"}, "credentials"),
        ({"endpoint": "http://169.254.169.254/fhir"}, "link-local"),  # a probe's
        # found by a security test: the same address spelled otherwise
        ({"endpoint": "http://[::ffff:169.254.169.254]/fhir"}, "link-local"),
        ({"endpoint": "http://2852039166/fhir"}, "link-local"),
        # found by review: the member's token would have gone to the new server unasked
        ({"endpoint": "https://third.example/fhir"}, "moves to another server"),
        ({"auth": {"kind": "bearer"}}, "token"),
        (
            {
                "auth": {
                    "kind": "smart-backend",
                    "token_url": "https://x.example/token",
                    "client_id": "rzcp",
                    "private_key": "not a key",
                }
            },
            "key",
        ),
        ({"auth": {"kind": "password"}}, "auth.kind"),
        ({"naam": "typo"}, "naam"),
        ({}, "nothing to change"),
        ({"name": "Ok", "max_pulls": -1}, "max_pulls"),
    ):
        diagnostics = outcome_of(await chief.patch(f"/admin/api/members/{ura}", json=bad), 400)["issue"][0]
        assert named in diagnostics["diagnostics"], (bad, diagnostics)
    listed = next(m for m in (await chief.get("/admin/api/members")).json()["members"] if m["ura"] == ura)
    assert {k: listed[k] for k in ("name", "timeout", "max_pulls", "auth")} == {
        "name": "Praktijk Nieuw", "timeout": 12.5, "max_pulls": None, "auth": "bearer"}  # fmt: skip
    outcome_of(await chief.patch("/admin/api/members/00000000", json={"name": "Nobody"}), 404)
    # a scheme or host in capitals is the same place, stored as it is read
    upper = await chief.patch(
        f"/admin/api/members/{ura}", json={"endpoint": f"HTTPS://NEW-{ura}.example/fhir"}
    )
    assert upper.status_code == 200 and upper.json()["endpoint"] == change["endpoint"], upper.text
    third = {"endpoint": "https://third.example/fhir", "auth": {"kind": "keep"}}
    kept = await chief.patch(f"/admin/api/members/{ura}", json=third)
    assert kept.status_code == 200 and kept.json()["auth"] == "bearer", kept.text
    # the console's record names what changed, and of the auth only its kind
    records = [e for e in await console_records(chief, "members.update") if ("ura", ura) in _details(e)]
    # newest first: the kept credentials, the capitals, the refusals, the change
    assert [e["outcome"] for e in records] == ["0", "0"] + ["4"] * 20 + ["0"]
    assert ("auth", "keep") in _details(records[0])
    details = dict(_details(records[-1]))
    assert details["auth"] == "bearer" and details["endpoint"] == change["endpoint"]
    # and what each field was (an administrator's walkthrough found only the new address)
    assert (details["endpoint_was"], details["name_was"], details["max_pulls_was"]) == (
        member["endpoint"],
        "Praktijk Oud",
        "2",
    )
    assert details["agb_was"] == "" and details["auth_was"] == "none"
    assert secret not in orjson.dumps(records).decode()


async def test_a_suspended_member_is_reinstated_and_a_client_rotates_its_keys(
    chief: httpx.AsyncClient, otto: httpx.AsyncClient, console_app: Any
) -> None:
    system = await register_system(console_app, scope="system/*.rs")
    organisation = f"/fhir/Organization/ura-{system.member_ura}"
    async with as_bearer(console_app, None) as http:
        issued = await http.post("/auth/token", data=system.form("system/*.rs"))
        assert issued.status_code == 200
        bearer = f"Bearer {issued.json()['access_token']}"
        before = {"Authorization": bearer, "X-Acting-Practitioner": PRACTITIONER}

        async def refused_with(why: str) -> None:
            refused = await http.get(organisation, headers=before)
            assert refused.status_code == 401 and refused.json()["issue"][0]["diagnostics"].endswith(why)

        assert (await chief.post(f"/admin/api/members/{system.member_ura}/suspend")).status_code == 200
        await refused_client(http, system)
        await refused_with("the client's organisation is suspended")
        outcome_of(await otto.post(f"/admin/api/members/{system.member_ura}/reinstate"), 403)
        outcome_of(await chief.post("/admin/api/members/00000000/reinstate"), 404)
        back = await chief.post(f"/admin/api/members/{system.member_ura}/reinstate")
        assert back.status_code == 200 and back.json()["status"] == "active", back.text
        # an integrator's walkthrough was told its member was not active: it was, the token was old
        await refused_with("the token was issued before its organisation's suspension: request a new token")
        old_token = await fetch_token(http, system, "system/*.rs")

        # key rotation: the old key and the new one together, then the new one alone
        rotated = SystemClient(system.client_id, system.member_ura, new_key("ES384"), alg="ES384")
        keys = f"/admin/api/clients/{system.client_id}/keys"
        both = {"keys": [system.key.as_dict(private=False), rotated.key.as_dict(private=False)]}
        answer = await chief.put(keys, json={"jwks": both})
        assert answer.status_code == 200 and answer.json()["kids"] == [system.key.kid, rotated.key.kid]
        await fetch_token(http, system, "system/*.rs")
        await fetch_token(http, rotated, "system/*.rs")
        answer = await chief.put(keys, json={"jwks": {"keys": [rotated.key.as_dict(private=False)]}})
        assert answer.status_code == 200 and answer.json()["kids"] == [rotated.key.kid]
        await refused_client(http, system)
        new_token = await fetch_token(http, rotated, "system/*.rs")
        for token in (old_token, new_token):  # issued to the same client: both run until they expire
            http.headers["Authorization"] = f"Bearer {token}"
            http.headers["X-Acting-Practitioner"] = PRACTITIONER
            found = await http.get(organisation)
            assert found.status_code == 200 and found.json()["active"] is True  # projected again
        # checked as at registration, and nothing changes when refused
        private = {"jwks": {"keys": [rotated.key.as_dict(private=True)]}}
        for bad in (private, {"jwks": [1]}, {}, {"jwks_url": "https://elsewhere.example/jwks"},
                    {"jwks_url": "https://keys.example/" + "x" * 2000}):  # fmt: skip
            outcome_of(await chief.put(keys, json=bad), 400)
        await fetch_token(http, rotated, "system/*.rs")
        outcome_of(await chief.put("/admin/api/clients/nobody/keys", json=private), 400)
        outcome_of(
            await chief.put("/admin/api/clients/nobody/keys", json={"jwks_url": "https://keys.example/k"}),
            404,
        )
        outcome_of(await otto.put(keys, json={"jwks_url": "https://keys.example/k"}), 403)
        assert (await chief.post(f"/admin/api/clients/{system.client_id}/revoke")).status_code == 200
        outcome_of(await chief.put(keys, json={"jwks_url": "https://keys.example/k"}), 409)
        await refused_with("the client was revoked")
    recorded = [
        e
        for e in await console_records(chief, "clients.keys")
        if ("client_id", system.client_id) in _details(e)
    ]
    assert ("kids", f"{system.key.kid},{rotated.key.kid}") in _details(recorded[-1])  # newest first
    reinstated = await console_records(chief, "members.reinstate")
    assert any(("ura", system.member_ura) in _details(e) and e["outcome"] == "0" for e in reinstated)


async def test_an_admin_hands_out_no_role_they_do_not_hold(
    chief: httpx.AsyncClient, ada: httpx.AsyncClient, console_app: Any
) -> None:
    """Found by a security test: an admin who may not read the trail registered an auditor client with a
    key of their own, and read the trail through it."""
    member = await register_system(console_app)
    key = new_key()
    auditor = {
        "client_id": f"aud-{uuid.uuid4().hex[:8]}",
        "member_ura": member.member_ura,
        "scope": "system/AuditEvent.rs",
        "role": "auditor",
        "jwks": {"keys": [key.as_dict(private=False)]},
    }
    outcome_of(await ada.post("/admin/api/clients", json=auditor), 403)
    listed = (await chief.get("/admin/api/clients")).json()["clients"]
    assert auditor["client_id"] not in {c["client_id"] for c in listed}
    assert (await chief.post("/admin/api/clients", json=auditor)).status_code == 201  # an admin and auditor
    own = {"keys": [new_key().as_dict(private=False)]}
    outcome_of(await ada.put(f"/admin/api/clients/{auditor['client_id']}/keys", json={"jwks": own}), 403)
    member_client = {**auditor, "client_id": f"mem-{uuid.uuid4().hex[:8]}", "role": "member",
                     "scope": "system/*.rs"}  # fmt: skip
    assert (await ada.post("/admin/api/clients", json=member_client)).status_code == 201


async def test_the_consoles_record_of_a_search_holds_no_bsn(chief: httpx.AsyncClient) -> None:
    """Found by the second security test: a BSN in a search body under another name, or as a
    practitioner number, went into the console's own audit record in clear."""
    body = {"practitioner": "999967551", "BSN": "999911120"}
    response = await chief.post("/admin/api/audit/events/_search", json=body)
    assert response.status_code in (200, 400), response.text
    records = await console_records(chief, "audit.search")
    text = orjson.dumps(records).decode()
    assert "999967551" not in text and "999911120" not in text


async def refused_client(http: httpx.AsyncClient, system: SystemClient) -> None:
    """The token endpoint's refusal, an OAuth error (RFC 6749 5.2), not an OperationOutcome."""
    response = await http.post("/auth/token", data=system.form("system/*.rs"))
    assert response.status_code == 400 and response.json()["error"] == "invalid_client", response.text


async def test_a_logout_ends_the_console_session_too(console_app: Any) -> None:
    token = await person_token(console_app, "chief")
    async with as_bearer(console_app, token) as http:
        assert (await http.get("/admin/api/members")).status_code == 200
        ended = await http.post("/auth/revoke", data={"token": token, "client_id": "rzcp-admin-console"})
        assert ended.status_code == 200
        for call in (http.get("/admin/api/members"), http.get("/admin/api/audit/events"),
                     http.post("/admin/api/members", json={"ura": "00000999", "name": "After logout",
                               "category": "huisartsen", "endpoint": "https://x.example/fhir"})):  # fmt: skip
            outcome_of(await call, 401)


def _details(event: dict[str, Any]) -> set[tuple[str, str]]:
    console = next(x for x in event["entity"] if x["type"]["code"] == "console")
    return {(d["type"], d["valueString"]) for d in console.get("detail", ())}


def _who(event: dict[str, Any]) -> str:
    return next(a["who"]["identifier"]["value"] for a in event["agent"] if a.get("requestor"))


async def test_an_admin_system_token_uses_the_api(console_app: Any) -> None:
    system = await register_system(console_app, role="admin")
    async with as_bearer(console_app, None) as http:
        token = await fetch_token(http, system)
        http.headers["Authorization"] = f"Bearer {token}"
        assert (await http.get("/admin/api/health")).status_code == 200
        outcome_of(await http.get("/admin/api/audit/events"), 403)


# --- the audit trail --------------------------------------------------------------------------------


async def test_search_by_bsn_and_by_practitioner_finds_the_event(
    chief: httpx.AsyncClient, console_app: Any, client: httpx.AsyncClient
) -> None:
    bsn, patient = await new_patient(console_app)
    uzi = f"9{uuid.uuid4().int % 10**8:08d}"
    read = await client.get(
        f"/fhir/Patient/{patient}",
        headers={"X-Acting-Practitioner": f"http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|{uzi}"},
    )
    assert read.status_code == 200
    # a BSN never travels in a URL: the GET refuses it, the console POSTs its filters
    outcome_of(await chief.get("/admin/api/audit/events", params={"bsn": bsn}), 400)
    outcome_of(await chief.get("/admin/api/audit/export", params={"bsn": bsn}), 400)
    by_bsn = (await chief.post("/admin/api/audit/events/_search", json={"bsn": bsn})).json()
    assert by_bsn["total"] >= 1
    event = next(e for e in by_bsn["events"] if e["practitioner"] and e["practitioner"].endswith(uzi))
    assert (
        event["patient"] == f"Patient/{patient}" and event["kind"] == "read" and event["outcome"] == "success"
    )
    by_uzi = (await chief.get("/admin/api/audit/events", params={"practitioner": uzi})).json()
    assert by_uzi["total"] == 1 and by_uzi["events"][0]["id"] == event["id"]
    full = f"http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|{uzi}"
    assert (await chief.get("/admin/api/audit/events", params={"practitioner": full})).json()["total"] == 1
    detail = (await chief.get(f"/admin/api/audit/events/{event['id']}")).json()
    assert detail["summary"] == event and detail["event"]["resourceType"] == "AuditEvent"
    assert detail["consent"] is None and detail["decision"] is None
    unknown = derive_test_bsn(uuid.uuid4().hex, {bsn})
    assert (await chief.post("/admin/api/audit/events/_search", json={"bsn": unknown})).json()["total"] == 0
    exported = await chief.post("/admin/api/audit/export", json={"bsn": bsn, "format": "ndjson"})
    assert event["id"] in exported.text
    [search] = (await console_records(chief, "audit.search"))[:1]  # newest: the search for `unknown`
    assert bsn not in orjson.dumps(search).decode() and unknown not in orjson.dumps(search).decode()
    assert ("bsn", "bsn given") in _details(search)
    # reading a patient's trail is filed under the patient: the searches by BSN, the export and the read
    # of one record are found by the patient (an administrator's walkthrough found them unfiled)
    filed = await chief.get(
        "/admin/api/audit/events", params={"patient": f"Patient/{patient}", "count": "200"}
    )
    consoled = [e for e in filed.json()["events"] if e["kind"] == "console"]
    assert len(consoled) == 3, consoled  # the search by its BSN, the export, the read of one record
    assert all(e["patient"] == f"Patient/{patient}" for e in consoled)
    # and who read it is found by their login as the console shows it (`dev:chief` found nothing)
    by_login = await chief.get(
        "/admin/api/audit/events", params={"practitioner": "dev:chief", "patient": f"Patient/{patient}"}
    )
    assert {e["id"] for e in by_login.json()["events"]} >= {e["id"] for e in consoled}


async def test_paging_and_export(chief: httpx.AsyncClient, console_app: Any) -> None:
    ura = await _records(console_app, day=_unique_day(), pulls=5)
    first = (await chief.get("/admin/api/audit/events", params={"member": ura, "count": "2"})).json()
    assert (
        first["total"] == 5 and not first["more_than_total"] and len(first["events"]) == 2 and first["next"]
    )
    seen = [e["id"] for e in first["events"]]
    page = first
    while page["next"]:
        page = (
            await chief.get(
                "/admin/api/audit/events", params={"member": ura, "count": "2", "page": page["next"]}
            )
        ).json()
        seen += [e["id"] for e in page["events"]]
    assert len(seen) == len(set(seen)) == 5
    ndjson = await chief.get("/admin/api/audit/export", params={"member": ura, "format": "ndjson"})
    assert ndjson.status_code == 200
    assert ndjson.headers["content-disposition"].startswith('attachment; filename="rzcp-audit-')
    assert ndjson.headers["content-disposition"].endswith('.ndjson"')
    assert [orjson.loads(line)["id"] for line in ndjson.content.splitlines()] == seen
    as_csv = await chief.get("/admin/api/audit/export", params={"member": ura, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["id"] for r in rows] == seen and {r["kind"] for r in rows} == {"pull"}
    assert rows[0]["member_name"] == f"Member {ura}"


async def test_a_practitioner_under_several_registers_is_one_list_newest_first(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    number = f"9{uuid.uuid4().int % 10**8:08d}"
    written = []
    for i, status in enumerate([200, 200, 500, 200, 403, 200, 503]):
        written.append(uuid.uuid4().hex)
        await console_app.state.runtime.audit.record(
            AuditFacts(
                interaction="read",
                status=status,
                correlation_id="c",
                kind="system",
                practitioner=Practitioner(PRACTITIONER_SYSTEMS[i % 3], number),
                event_id=written[-1],
            )
        )
    newest_first = written[::-1]
    seen: list[str] = []
    page: dict[str, Any] = {"next": None}
    while True:
        params = {"practitioner": number, "count": "2", **({"page": page["next"]} if page["next"] else {})}
        page = (await chief.get("/admin/api/audit/events", params=params)).json()
        assert page["total"] == 7
        seen += [e["id"] for e in page["events"]]
        if not page["next"]:
            break
    assert seen == newest_first
    failed = await chief.get("/admin/api/audit/events", params={"practitioner": number, "outcome": "failed"})
    assert [e["id"] for e in failed.json()["events"]] == [newest_first[0], newest_first[4]]
    export = await chief.get("/admin/api/audit/export", params={"practitioner": number, "format": "ndjson"})
    assert [orjson.loads(line)["id"] for line in export.content.splitlines()] == newest_first


async def test_a_bounded_total_counts_up_to_its_limit_and_says_when_there_are_more(console_app: Any) -> None:
    ura = await _records(console_app, day=_unique_day(), pulls=5)
    db = console_app.state.runtime.db
    capped = await search_events(db, member=ura, total_limit=3)
    assert (capped.total, capped.more_than_total, len(capped.events)) == (3, True, 5)
    exact = await search_events(db, member=ura, total_limit=5)
    assert (exact.total, exact.more_than_total) == (5, False)
    unbounded = await search_events(db, member=ura)
    assert (unbounded.total, unbounded.more_than_total) == (5, False)


async def test_a_pull_shows_its_consent_decision(chief: httpx.AsyncClient, console_app: Any) -> None:
    ura = await _records(console_app, day=_unique_day(), pulls=1)
    [event] = (await chief.get("/admin/api/audit/events", params={"member": ura})).json()["events"]
    detail = (await chief.get(f"/admin/api/audit/events/{event['id']}")).json()
    assert detail["decision"]["decision"] == "permit"
    assert detail["decision"]["reason"] == "permit Condition from 11111111: default-permit"


async def test_each_decision_of_a_pull_names_its_member_and_what_decided_it(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    """A pull refused by four members: one by the patient's GGZ shield, three for want of any consent. The
    consent shown is said to have made one of the four decisions (a new user's walkthrough read it as
    the reason for all four), and the others say, in words, that there was no consent."""
    runtime = console_app.state.runtime
    uras = [f"{uuid.uuid4().int % 10**8:08d}" for _ in range(4)]
    consent_id = f"c{uuid.uuid4().hex[:12]}"
    async with runtime.db.write() as conn:
        for i, ura in enumerate(uras):
            await registry.add_member(
                conn, ura=ura, name=f"Lid {i}", category="Z3", endpoint=f"https://m{i}.example/fhir"
            )
        shield = {"resourceType": "Consent", "id": consent_id, "status": "active",
                  "scope": {"text": "patient-privacy"}, "category": [{"text": "shield"}],
                  "provision": {"type": "deny"}}  # fmt: skip
        await ResourceStore(conn, runtime.registry).update(shield, allow_create=True)
    decisions = (
        Decision(False, uras[0], "MedicationRequest", consents=((consent_id, "1"),)),
        *(Decision(False, ura, "MedicationRequest", rule="no-consent") for ura in uras[1:]),
    )
    await runtime.audit.record(
        AuditFacts(
            interaction="search-type",
            status=200,
            decisions=decisions,
            kind="system",
            member_ura=uras[1],
            client_id="ehr-x",
            recorded=_unique_day(),
            correlation_id="c",
            patient="Patient/p",
        )
    )
    [event] = (await chief.get("/admin/api/audit/events", params={"member": uras[1]})).json()["events"]
    detail = (await chief.get(f"/admin/api/audit/events/{event['id']}")).json()
    assert detail["consent"]["id"] == consent_id
    decision = detail["decision"]
    assert decision["decision"] == "deny"
    assert decision["items"][0] == {
        "decision": "deny",
        "data_class": "MedicationRequest",
        "source": uras[0],
        "source_name": "Lid 0",
        "consents": [f"Consent/{consent_id}/_history/1"],
        "rule": None,
    }
    assert [(i["source_name"], i["consents"], i["rule"]) for i in decision["items"][1:]] == [
        (f"Lid {n}", [], "no-consent") for n in (1, 2, 3)
    ]
    assert decision["by_shown_consent"] == [0]


async def test_verify_runs_are_recorded_and_shown(chief: httpx.AsyncClient, otto: httpx.AsyncClient) -> None:
    ran = await chief.post("/admin/api/audit/verify")
    assert ran.status_code == 200, ran.text
    last = ran.json()["last"]
    assert last["by"] == "dev:chief" and last["records"] > 0 and isinstance(last["ok"], bool)
    assert last["message"].startswith("audit trail")
    assert (await otto.get("/admin/api/audit/verify")).json() == {"last": last}
    assert (await chief.get("/admin/api/health")).json()["audit_verify"] == last
    searched = await chief.get("/admin/api/audit/events", params={"count": "1"})
    assert searched.json()["integrity"] == last


async def test_a_search_says_when_the_trail_was_last_found_broken(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    """The integrity screen said "broken at record 23" while the searches showed the changed record
    without a word (an administrator's walkthrough): the search answers with the last check's finding."""
    db = console_app.state.runtime.db
    broken = VerifyResult(
        ok=False, records=30, first_seq=1, last_seq=30, checkpoints=0, bad_seq=23, reason="x"
    )
    await verify_runs.record_run(db, broken, seconds=0.1, by="test")
    try:
        integrity = (await chief.get("/admin/api/audit/events", params={"count": "1"})).json()["integrity"]
        assert integrity["ok"] is False and integrity["first_bad"] == 23
    finally:  # the next check finds the trail as it is
        assert (await chief.post("/admin/api/audit/verify")).status_code == 200


# --- the charts ---------------------------------------------------------------------------------------


_DAYS: set[int] = set()


def _unique_day() -> datetime:
    """A day of the 2010s that no other test writes records on (the charts count per day)."""
    while True:
        n = uuid.uuid4().int % 3000
        if n not in _DAYS:
            _DAYS.add(n)
            return datetime(2011, 1, 1, 11, 0) + timedelta(days=n)


async def _records(app: Any, *, day: datetime, pulls: int = 0, pushes: int = 0, denied: int = 0,
                   emergencies: int = 0, failures: int = 0) -> str:  # fmt: skip
    """Audit records of a new member on `day`, written through the gateway's writer."""
    ura = f"{uuid.uuid4().int % 10**8:08d}"
    async with app.state.runtime.db.write() as conn:
        await registry.add_member(
            conn, ura=ura, name=f"Member {ura}", category="Z3", endpoint="https://m.example/fhir"
        )
    permit = Decision(True, "11111111", "Condition", rule="default-permit")
    deny = Decision(False, "11111111", "Condition", rule="default-deny")
    base = {"kind": "system", "member_ura": ura, "client_id": f"ehr-{ura}", "recorded": day,
            "correlation_id": "c", "patient": "Patient/p"}  # fmt: skip
    facts = [AuditFacts(interaction="search-type", status=200, decisions=(permit,), **base)] * pulls
    facts += [
        AuditFacts(
            interaction="operation", operation="process-message", status=202, decisions=(permit,), **base
        )
    ] * pushes
    facts += [AuditFacts(interaction="search-type", status=200, decisions=(deny,), **base)] * denied
    facts += [
        AuditFacts(interaction="search-type", status=200, decisions=(permit,), purpose="ETREAT", **base)
    ] * emergencies
    facts += [
        AuditFacts(
            interaction="search-type",
            status=200,
            decisions=(permit,),
            outcome_desc="source 22222222 failed",
            **base,
        )
    ] * failures
    for each in facts:
        await app.state.runtime.audit.record(each)
    return ura


async def test_stats_count_the_records_made(chief: httpx.AsyncClient, console_app: Any) -> None:
    day = _unique_day()
    ura = await _records(console_app, day=day, pulls=3, pushes=2, denied=1, emergencies=2, failures=1)
    before, on = (day - timedelta(days=1)).date().isoformat(), day.date().isoformat()
    response = await chief.get("/admin/api/audit/stats", params={"since": before, "until": on})
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["days"] == [before, on]
    assert stats["members"][ura] == f"Member {ura}"
    assert stats["pulls"][ura] == [0, 3 + 1 + 2 + 1]  # every pull, the denied and the emergency ones too
    assert stats["pushes"][ura] == [0, 2]
    assert stats["denials"] == [0, 1] and stats["emergencies"] == [0, 2]
    assert stats["upstream_failures"]["22222222"] == [0, 1]
    again = (await chief.get("/admin/api/audit/stats", params={"since": before, "until": on})).json()
    assert again["pulls"][ura] == [0, 7]  # counted once, however often the chart is read
    default = (await chief.get("/admin/api/audit/stats")).json()
    assert len(default["days"]) == 30


async def test_health_lists_a_failing_member(chief: httpx.AsyncClient, console_app: Any) -> None:
    ura = new_ura()
    await chief.post("/admin/api/members", json={"ura": ura, "name": "Wankel", "category": "ggz",
                                                 "endpoint": "https://w.example/fhir"})  # fmt: skip
    permit = Decision(True, ura, "Condition", rule="default-permit")
    await console_app.state.runtime.audit.record(
        AuditFacts(
            interaction="search-type",
            status=200,
            correlation_id="c",
            decisions=(permit,),
            outcome_desc=f"source {ura} timeout",
        )
    )
    health = (await chief.get("/admin/api/health")).json()
    assert health["status"] == "degraded"
    failing = next(m for m in health["failing_members"] if m["ura"] == ura)
    assert failing["name"] == "Wankel" and failing["failures_24h"] == 1 and failing["last_failure"]
    # a delivery to it that must be tried again counts too, as the worker records it (an operator's
    # walkthrough: five failed attempts to a member that was down, and the count stayed at 1)
    report = DeliveryReport("m-1", "01234567", ura, None, 1, "retry", None, "the receiver answered 503", None)
    await audit_delivery(console_app.state.runtime.audit)(report)
    health = (await chief.get("/admin/api/health")).json()
    assert next(m for m in health["failing_members"] if m["ura"] == ura)["failures_24h"] == 2
    listed = (await chief.get("/admin/api/members")).json()["members"]
    assert next(m for m in listed if m["ura"] == ura)["health"]["state"] == "failing"
    assert set(health["outbox"]) == {"pending", "failed"}
    # a member reached over plain http on another machine is named (its data travels unencrypted);
    # one on this machine (a sidecar holding the TLS connection) is not
    clear, local = new_ura(), new_ura()
    for who, endpoint in ((clear, "http://ehr.example/fhir"), (local, "http://127.0.0.1:9/fhir")):
        member = {"ura": who, "name": f"Lid {who}", "category": "ggz", "endpoint": endpoint}
        added = await chief.post("/admin/api/members", json=member)
        assert added.status_code == 201, added.text
    named = {m["ura"]: m for m in (await chief.get("/admin/api/health")).json()["plain_http_members"]}
    assert named[clear] == {"ura": clear, "name": f"Lid {clear}", "endpoint": "http://ehr.example/fhir"}
    assert local not in named


async def test_a_clients_scope_narrowed_cuts_its_tokens_at_once_and_widened_comes_with_the_next(
    chief: httpx.AsyncClient,
    ada: httpx.AsyncClient,
    otto: httpx.AsyncClient,
    console_app: Any,
    client: httpx.AsyncClient,
) -> None:
    system = await register_system(console_app, scope="system/*.rs system/Patient.c")
    scope_url = f"/admin/api/clients/{system.client_id}/scope"
    stored = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Scoped"})
    assert stored.status_code == 201, stored.text
    organisation = f"/fhir/Organization/{stored.json()['id']}"  # the read path checks liveness in its SELECT
    async with as_bearer(console_app, None) as http:
        http.headers["X-Acting-Practitioner"] = PRACTITIONER
        http.headers["Authorization"] = f"Bearer {await fetch_token(http, system, 'system/*.rs')}"
        assert (await http.get(organisation)).status_code == 200
        outcome_of(await otto.put(scope_url, json={"scope": "system/Organization.rs"}), 403)  # no admin

        answer = await chief.put(scope_url, json={"scope": "system/Organization.rs"})
        assert answer.status_code == 200 and answer.json()["scope"] == "system/Organization.rs", answer.text
        # the token granted system/*.rs is refused from its next use: on the read path and on a search
        outcome_of(await http.get(organisation), 401)
        outcome_of(await http.get("/fhir/Organization", params={"_id": f"ura-{system.member_ura}"}), 401)
        granted = await http.post("/auth/token", data=system.form("system/*.rs"))
        assert granted.json()["scope"] == "system/Organization.rs"  # the registered part only
        http.headers["Authorization"] = f"Bearer {granted.json()['access_token']}"
        assert (await http.get(organisation)).status_code == 200
        assert (await http.get("/fhir/Endpoint")).status_code == 403  # not in the scope now

        # checked as at registration; a refused change leaves the registered scope and the token working
        for bad in ({"scope": "patient/*.rs"}, {"scope": "system/Nope.rs"}, {"scope": "system/*.x"}, {}):
            outcome_of(await chief.put(scope_url, json=bad), 400)
        assert (await http.get(organisation)).status_code == 200

        # widened: the token held keeps working, the next one is granted the more
        assert (await chief.put(scope_url, json={"scope": "system/*.rs"})).status_code == 200
        assert (await http.get(organisation)).status_code == 200
        assert (await http.post("/auth/token", data=system.form("system/*.rs"))).json()[
            "scope"
        ] == "system/*.rs"

        outcome_of(await chief.put("/admin/api/clients/nobody/scope", json={"scope": "system/*.rs"}), 404)
        assert (await chief.post(f"/admin/api/clients/{system.client_id}/revoke")).status_code == 200
        outcome_of(await chief.put(scope_url, json={"scope": "system/*.rs"}), 409)

    # an admin who is no auditor does not change what an auditor's system may do
    auditor_system = await register_system(console_app, scope="system/AuditEvent.rs", role="auditor")
    denied = await ada.put(
        f"/admin/api/clients/{auditor_system.client_id}/scope", json={"scope": "system/*.rs"}
    )
    outcome_of(denied, 403)
    records = await console_records(chief, "clients.scope")
    assert ("scope", "system/Organization.rs") in {p for e in records for p in _details(e)}


async def test_a_pull_consent_refused_is_not_listed_as_a_disclosure(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    """Every source refused by consent, the pull answers 200 with nothing: its outcome is success, which
    read as a disclosure in the list and the CSV (an administrator's walkthrough). The summary says it was
    refused and what the answer carried, in the list and the export alike."""
    ura = await _records(console_app, day=_unique_day(), pulls=1, denied=1)
    found = (await chief.get("/admin/api/audit/events", params={"member": ura})).json()["events"]
    refused = [e for e in found if e["denied"]]
    assert len(found) == 2 and len(refused) == 1
    assert refused[0]["outcome"] == "success" and refused[0]["returned"] == 0
    as_csv = await chief.get("/admin/api/audit/export", params={"member": ura, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert sorted(r["denied"] for r in rows) == ["false", "true"]
