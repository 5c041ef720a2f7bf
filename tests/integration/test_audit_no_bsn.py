"""BSNs are stored nowhere in clear, the audit trail included: whatever way a request names a BSN (in the
query, the path or a header; refused or answered), the AuditEvent stored for it holds no BSN, and still
says what was asked. The stored record's text is searched, with its base64 query decoded."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote_plus

import httpx
import orjson
import pytest
from sqlalchemy import text

from rzcp.auth.bsn import BSN_OID, BSN_SYSTEM

BSN = "999967551"
OID = f"urn:oid:{BSN_OID}"


async def stored_record(app: Any, response: httpx.Response) -> str:
    """The stored AuditEvent of this response, as text, with each recorded query decoded (BALP keeps the
    query base64-encoded: searched as stored, a BSN in it would not be seen)."""
    async with app.state.runtime.db.read() as conn:
        rows = (
            await conn.execute(
                text("SELECT content FROM audit_events WHERE correlation_id = :id"),
                {"id": response.headers["x-request-id"]},
            )
        ).all()
    assert len(rows) == 1, rows
    content = rows[0].content
    queries = [
        unquote_plus(base64.b64decode(e["query"]).decode())
        for e in orjson.loads(content)["entity"]
        if e.get("query")
    ]
    return "\n".join([content, *queries])


def assert_no_bsn(record: str) -> None:
    assert BSN not in record
    assert BSN not in re.sub(r"[\s.\-+]", "", record)  # nor as written with spaces, dots or dashes


@pytest.mark.parametrize(
    ("url", "asked"),
    [
        (f"/fhir/Patient?identifier={BSN}", "identifier=*"),
        (f"/fhir/Patient?identifier={OID}|{BSN}", f"identifier={OID}|*"),
        (f"/fhir/Patient?identifier={BSN_OID}%7C{BSN}", f"identifier={BSN_OID}|*"),
        (f"/fhir/Patient?identifier:text={BSN}", "identifier:text=*"),
        (f"/fhir/Condition?patient.identifier={BSN}", "patient.identifier=*"),
        (
            f"/fhir/Observation?subject:Patient.identifier=http%3A%2F%2Ffhir.nl%2Ffhir%2FNamingSystem%2Fbsn%7C{BSN}",
            f"subject:Patient.identifier={BSN_SYSTEM}|*",
        ),
        (f"/fhir/Patient?_has:Observation:patient:identifier={BSN}", "_has:Observation:patient:identifier=*"),
        ("/fhir/Patient?identifier=%39%39%39%39%36%37%35%35%31", "identifier=*"),
        ("/fhir/Patient?identifier=999+967+551", "identifier=*"),
        (
            f"/fhir/Patient?identifier=http://x.example/mrn|A1,{BSN}&identifier={BSN_SYSTEM}|{BSN}&_count=5",
            f"identifier=http://x.example/mrn|A1,*&identifier={BSN_SYSTEM}|*&_count=5",
        ),
        (f"/fhir/Condition?patient={BSN}", "patient=*"),
        ("/fhir/Condition?patient=999.967.551", "patient=*"),
        (f"/fhir/Patient?{BSN}", "*="),
    ],
)
async def test_a_bsn_in_the_query_is_not_stored(
    app: Any, client: httpx.AsyncClient, url: str, asked: str
) -> None:
    response = await client.get(url)
    assert response.status_code < 500, response.text
    record = await stored_record(app, response)
    assert_no_bsn(record)
    assert asked in record  # the parameter and the system asked by are kept


async def test_a_bsn_asked_without_a_token_is_not_stored(app: Any, anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get(f"/fhir/Patient?identifier={BSN}")
    assert response.status_code == 401
    assert_no_bsn(await stored_record(app, response))


@pytest.mark.parametrize(
    "path",
    [
        f"/fhir/Patient/{BSN}",
        f"/fhir/Patient/{BSN}/_history",
        f"/fhir/Patient/{BSN}/$everything",
        f"/fhir/${BSN}",
    ],
)
async def test_a_bsn_in_the_path_is_not_stored(app: Any, client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code < 500, response.text
    assert_no_bsn(await stored_record(app, response))


async def test_a_search_posted_as_a_form_leaves_no_bsn(app: Any, client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient/_search", data={"identifier": f"{BSN_SYSTEM}|{BSN}"})
    assert response.status_code == 200, response.text
    assert_no_bsn(await stored_record(app, response))


async def test_a_practitioner_named_by_bsn_is_refused_and_not_stored(
    app: Any, client: httpx.AsyncClient
) -> None:
    # the last: an organisation's own OID with a BSN as the employee number (the second security test)
    for system in (OID, BSN_SYSTEM, "urn:oid:2.16.528.1.1007.99"):
        response = await client.get("/fhir/Patient", headers={"X-Acting-Practitioner": f"{system}|{BSN}"})
        assert response.status_code == 400, response.text
        assert "BSN" in response.json()["issue"][0]["diagnostics"]
        assert_no_bsn(await stored_record(app, response))


async def test_a_request_id_holding_a_bsn_is_replaced(app: Any, client: httpx.AsyncClient) -> None:
    # the last two found by the second security test: a UUID's last group, and dots between the digits
    for sent in (f"lookup-{BSN}-1", f"00000000-0000-4000-8000-000{BSN}", "bsn.999.967.551"):
        response = await client.get("/fhir/Organization", headers={"X-Request-ID": sent})
        assert response.status_code == 200
        assert response.headers["x-request-id"] != sent
        assert_no_bsn(await stored_record(app, response))
    kept = await client.get("/fhir/Organization", headers={"X-Request-ID": "lookup-12345678-1"})
    assert kept.headers["x-request-id"] == "lookup-12345678-1"  # a member's own id otherwise stays
