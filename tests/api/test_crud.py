"""The FHIR REST interactions through HTTP, on SQLite and PostgreSQL: what a member's engineer relies on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson

from tests.conftest import FHIR, SHARED_DATA, load_json

HEADERS = {"Content-Type": FHIR, "Accept": FHIR}


def patient(family: str = "Jansen", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}],
        "name": [{"family": family, "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1970-03-04",
        **extra,
    }


async def create(client: httpx.AsyncClient, resource: dict[str, Any], **headers: str) -> httpx.Response:
    response = await client.post(
        f"/fhir/{resource['resourceType']}", json=resource, headers={**HEADERS, **headers}
    )
    assert response.status_code == 201, response.text
    return response


async def test_create_assigns_id_version_and_meta(client: httpx.AsyncClient) -> None:
    response = await create(client, patient(id="client-chosen", meta={"versionId": "99", "profile": ["x:y"]}))
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert body["meta"]["profile"] == ["x:y"]
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert response.headers["content-type"].startswith("application/fhir+json")


async def test_read_returns_what_was_stored(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient())).json()
    response = await client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


async def test_real_nl_core_resources_round_trip(client: httpx.AsyncClient) -> None:
    for name in (
        "nl-core-Patient-01.json",
        "nl-core-AllergyIntolerance-01.json",
        "nl-core-HealthProfessional-Organization-01.json",
    ):
        path = SHARED_DATA / "nl-core" / name
        if not path.exists():
            continue
        original = load_json(path)
        created = (await create(client, original)).json()
        read = (await client.get(f"/fhir/{original['resourceType']}/{created['id']}")).json()
        for key, value in original.items():
            if key not in ("id", "meta"):
                assert read[key] == value, key


async def test_update_keeps_every_version(client: httpx.AsyncClient) -> None:
    created = (await create(client, patient("Jansen"))).json()
    pid = created["id"]
    for family in ("de Vries", "Bakker"):
        response = await client.put(
            f"/fhir/Patient/{pid}", json={**patient(family), "id": pid}, headers=HEADERS
        )
        assert response.status_code == 200, response.text
    current = (await client.get(f"/fhir/Patient/{pid}")).json()
    assert current["meta"]["versionId"] == "3"
    assert current["name"][0]["family"] == "Bakker"
    first = await client.get(f"/fhir/Patient/{pid}/_history/1")
    assert first.status_code == 200
    assert first.json()["name"][0]["family"] == "Jansen"
    assert first.headers["etag"] == 'W/"1"'
    history = (await client.get(f"/fhir/Patient/{pid}/_history")).json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT", "POST"]


async def test_update_with_if_match(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]
    body = {**patient("Visser"), "id": pid}
    ok = await client.put(f"/fhir/Patient/{pid}", json=body, headers={**HEADERS, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await client.put(f"/fhir/Patient/{pid}", json=body, headers={**HEADERS, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/fhir/Patient/{pid}")).json()["meta"]["versionId"] == "2"


async def test_concurrent_updates_with_the_same_if_match_have_one_winner(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]

    async def attempt(n: int) -> int:
        body = {**patient(f"Writer{n}"), "id": pid}
        response = await client.put(
            f"/fhir/Patient/{pid}", json=body, headers={**HEADERS, "If-Match": 'W/"1"'}
        )
        return response.status_code

    statuses = await asyncio.gather(*(attempt(n) for n in range(8)))
    assert sorted(statuses) == [200] + [412] * 7
    history = (await client.get(f"/fhir/Patient/{pid}/_history")).json()
    assert len(history["entry"]) == 2


async def test_concurrent_updates_without_if_match_all_land_in_order(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]

    async def attempt(n: int) -> int:
        response = await client.put(
            f"/fhir/Patient/{pid}", json={**patient(f"W{n}"), "id": pid}, headers=HEADERS
        )
        return response.status_code

    assert await asyncio.gather(*(attempt(n) for n in range(6))) == [200] * 6
    history = (await client.get(f"/fhir/Patient/{pid}/_history")).json()
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"]) == list(range(1, 8))


async def test_delete_then_read_is_gone_and_history_shows_it(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]
    deleted = await client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 204
    gone = await client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.delete(f"/fhir/Patient/{pid}")).status_code == 204
    history = (await client.get(f"/fhir/Patient/{pid}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert (await client.get(f"/fhir/Patient/{pid}/_history/2")).status_code == 410
    assert (await client.get(f"/fhir/Patient/{pid}/_history/1")).status_code == 200
    search = (await client.get("/fhir/Patient", params={"_id": pid})).json()
    assert search.get("entry", []) == []


async def test_update_after_delete_revives_with_next_version(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]
    await client.delete(f"/fhir/Patient/{pid}")
    revived = await client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=HEADERS)
    assert revived.status_code == 200
    assert revived.json()["meta"]["versionId"] == "3"


async def test_type_history_pages_with_opaque_links(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await create(
            client,
            {
                "resourceType": "Endpoint",
                "status": "active",
                "name": f"ep-history-{n}",
                "connectionType": {"code": "hl7-fhir-rest"},
                "payloadType": [{"text": "any"}],
                "address": f"https://ep{n}.example/fhir",
            },
        )
    page = (await client.get("/fhir/Endpoint/_history", params={"_count": "2"})).json()
    assert len(page["entry"]) == 2
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert "_page=" in next_url and "offset" not in next_url
    second = (await client.get(next_url)).json()
    assert len(second["entry"]) == 2
    first_ids = {e["fullUrl"] for e in page["entry"]}
    assert not first_ids & {e["fullUrl"] for e in second["entry"]}


async def test_conditional_create(client: httpx.AsyncClient) -> None:
    org = {
        "resourceType": "Organization",
        "name": "Huisartsenpraktijk Test",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "87654321"}],
    }
    condition = "identifier=http://fhir.nl/fhir/NamingSystem/ura|87654321"
    first = await client.post("/fhir/Organization", json=org, headers={**HEADERS, "If-None-Exist": condition})
    assert first.status_code == 201
    again = await client.post("/fhir/Organization", json=org, headers={**HEADERS, "If-None-Exist": condition})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    await create(client, org)  # a second one, unconditionally
    ambiguous = await client.post(
        "/fhir/Organization", json=org, headers={**HEADERS, "If-None-Exist": condition}
    )
    assert ambiguous.status_code == 412


async def test_prefer_return_minimal(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/fhir/Patient", json=patient(), headers={**HEADERS, "Prefer": "return=minimal"}
    )
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["location"]


async def test_pretty_and_format(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]
    pretty = await client.get(f"/fhir/Patient/{pid}", params={"_pretty": "true"})
    assert b"\n  " in pretty.content
    assert (await client.get(f"/fhir/Patient/{pid}", params={"_format": "json"})).status_code == 200
    xml = await client.get(f"/fhir/Patient/{pid}", params={"_format": "xml"})
    assert xml.status_code == 406
    assert xml.json()["resourceType"] == "OperationOutcome"
    assert (
        await client.get(f"/fhir/Patient/{pid}", headers={"Accept": "application/fhir+xml"})
    ).status_code == 406


async def test_elements_and_summary_mark_the_resource_subsetted(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]
    body = (await client.get(f"/fhir/Patient/{pid}", params={"_elements": "name"})).json()
    assert set(body) == {"resourceType", "id", "meta", "name"}
    assert any(tag["code"] == "SUBSETTED" for tag in body["meta"]["tag"])
    summary = (await client.get(f"/fhir/Patient/{pid}", params={"_summary": "true"})).json()
    assert "name" in summary and "birthDate" in summary and "text" not in summary


async def test_metadata_is_an_r4_capability_statement(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    patient_entry = next(r for r in body["rest"][0]["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient_entry["searchParam"]}
    assert {"identifier", "name", "birthdate", "_id", "_lastUpdated"} <= names
    assert {"read", "vread", "update", "delete", "create", "search-type"} <= {
        i["code"] for i in patient_entry["interaction"]
    }
    # the trail is written by the gateway only: no write is offered (each is a 405)
    audit_entry = next(r for r in body["rest"][0]["resource"] if r["type"] == "AuditEvent")
    offered = {i["code"] for i in audit_entry["interaction"]}
    assert "search-type" in offered and not offered & {"create", "update", "delete"}
    # the registry's and the trail's own operations are documented where a client looks for them
    consent_entry = next(r for r in body["rest"][0]["resource"] if r["type"] == "Consent")
    assert [o["name"] for o in consent_entry["operation"]] == ["evaluate"]
    assert [o["name"] for o in audit_entry["operation"]] == ["access-log"]
    assert (await client.delete("/fhir/AuditEvent/any")).status_code == 405


# --- what a client gets wrong: each answer is a 4xx OperationOutcome, and nothing stored is lost ---


async def assert_outcome(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    if code:
        assert body["issue"][0]["code"] == code, body
    return body


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers=HEADERS)
    body = await assert_outcome(response, 400, "structure")
    assert body["issue"][0]["diagnostics"] == "the body is not valid JSON (at character 27)"
    # what is wrong is said as it is: valid JSON nested too deeply, bytes that are not UTF-8
    deep = b'{"resourceType": "Patient", "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    body = await assert_outcome(await client.post("/fhir/Patient", content=deep, headers=HEADERS), 400)
    assert body["issue"][0]["diagnostics"].startswith("the body is nested more than 1024 levels deep")
    latin = '{"resourceType": "Patient", "name": [{"family": "Müller"}]}'.encode("latin-1")
    body = await assert_outcome(await client.post("/fhir/Patient", content=latin, headers=HEADERS), 400)
    assert body["issue"][0]["diagnostics"] == "the body is not UTF-8"


async def test_wrong_resource_type(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json={"resourceType": "Observation"}, headers=HEADERS)
    body = await assert_outcome(response, 422)
    assert "resourceType" in body["issue"][0]["diagnostics"]


async def test_invalid_fhir_names_the_element(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json=patient(birthDate="04-03-1970"), headers=HEADERS)
    body = await assert_outcome(response, 422, "structure")
    assert "birthDate" in body["issue"][0]["diagnostics"]
    assert "04-03-1970" not in response.text
    # a string where R4 has an object: the models' own words were "Invalid JSON", of a valid body
    response = await client.post("/fhir/Patient", json=patient(maritalStatus="married"), headers=HEADERS)
    body = await assert_outcome(response, 422, "structure")
    assert body["issue"][0]["diagnostics"].startswith(
        "Patient.maritalStatus: a string where FHIR has an object"
    )
    assert "JSON" not in response.text
    # ... and a string holding an object's JSON, which the models read as that object: it was stored as a
    # string (maritalStatus), or a 500 (meta)
    for element, value in (("maritalStatus", {"text": "married"}), ("meta", {"security": []})):
        response = await client.post(
            "/fhir/Patient", json=patient(**{element: json.dumps(value)}), headers=HEADERS
        )
        body = await assert_outcome(response, 422, "structure")
        assert body["issue"][0]["diagnostics"].startswith(
            f"Patient.{element}: a string where FHIR has an object"
        )


def nested_extension(levels: int) -> list[dict[str, Any]]:
    """An extension holding an extension, `levels` deep: valid FHIR, two JSON levels a step."""
    inner: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels - 1):
        inner = {"url": "http://example.org/step", "extension": [inner]}
    return [inner]


async def test_content_nested_too_deeply_to_store_is_refused_and_loses_nothing(
    client: httpx.AsyncClient,
) -> None:
    """Found by a probe: 150 nested extensions (300 JSON levels, past the 255 orjson writes) were a 500,
    and the connection was reset after it. Now a 422 naming the problem; 100 levels are stored."""
    kept = (await create(client, patient("Original", extension=nested_extension(100)))).json()
    assert (await client.get(f"/fhir/Patient/{kept['id']}")).json() == kept
    deep = patient("Changed", extension=nested_extension(150))
    body = await assert_outcome(
        await client.post("/fhir/Patient", json=deep, headers=HEADERS), 422, "structure"
    )
    assert "nested too deeply" in body["issue"][0]["diagnostics"]
    changed = await client.put(
        f"/fhir/Patient/{kept['id']}", json={**deep, "id": kept["id"]}, headers=HEADERS
    )
    await assert_outcome(changed, 422, "structure")
    assert (await client.get(f"/fhir/Patient/{kept['id']}")).json() == kept  # nothing stored is lost


async def test_unknown_element_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json=patient(favouriteColour="blue"), headers=HEADERS)
    await assert_outcome(response, 422, "structure")


async def test_not_an_object(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=b"[1, 2]", headers=HEADERS)
    await assert_outcome(response, 422)


async def test_id_mismatch_on_update_loses_nothing(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient("Original"))).json()["id"]
    response = await client.put(
        f"/fhir/Patient/{pid}", json={**patient("Changed"), "id": "other"}, headers=HEADERS
    )
    await assert_outcome(response, 400)
    missing = await client.put(f"/fhir/Patient/{pid}", json=patient("Changed"), headers=HEADERS)
    await assert_outcome(missing, 400, "required")
    assert (await client.get(f"/fhir/Patient/{pid}")).json()["name"][0]["family"] == "Original"


async def test_update_of_unknown_id_does_not_create(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/nobody", json={**patient(), "id": "nobody"}, headers=HEADERS)
    await assert_outcome(response, 404)


async def test_unsupported_media_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"}
    )
    await assert_outcome(response, 415)
    bare = await client.post("/fhir/Patient", content=orjson.dumps(patient()))
    await assert_outcome(bare, 415)


async def test_unknown_type(client: httpx.AsyncClient) -> None:
    await assert_outcome(await client.get("/fhir/Unicorn"), 404, "not-supported")
    await assert_outcome(await client.get("/fhir/Unicorn/1"), 404, "not-supported")


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    await assert_outcome(await client.get("/fhir/Patient/does-not-exist"), 404, "not-found")
    await assert_outcome(await client.get("/fhir/Patient/bad$id"), 400)
    await assert_outcome(await client.get("/fhir/Patient/x/_history/abc"), 400)


async def test_body_over_the_limit(client: httpx.AsyncClient, app: Any) -> None:
    limit = app.state.runtime.settings.max_body_bytes
    huge = patient(
        text={
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * limit + "</div>",
        }
    )
    response = await client.post("/fhir/Patient", content=orjson.dumps(huge), headers=HEADERS)
    await assert_outcome(response, 413, "too-costly")


async def test_body_over_the_limit_without_content_length(client: httpx.AsyncClient, app: Any) -> None:
    limit = app.state.runtime.settings.max_body_bytes

    async def chunks():  # streamed: no Content-Length to trust
        yield b'{"resourceType": "Patient", "text": {"div": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}}'

    response = await client.post("/fhir/Patient", content=chunks(), headers=HEADERS)
    await assert_outcome(response, 413)


async def test_empty_body(client: httpx.AsyncClient) -> None:
    await assert_outcome(await client.post("/fhir/Patient", content=b"", headers=HEADERS), 400)


async def test_bad_if_match(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient())).json()["id"]
    response = await client.put(
        f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers={**HEADERS, "If-Match": "banana"}
    )
    await assert_outcome(response, 400)


async def test_method_not_allowed(client: httpx.AsyncClient) -> None:
    await assert_outcome(await client.patch("/fhir/Patient/x", content=b"{}"), 405)
    # an operation that is POSTed, asked otherwise: a 405 naming POST, not "'$evaluate' is not a valid
    # FHIR id" from the read route (a probe's)
    for path in ("/fhir/Consent/$evaluate", "/fhir/Patient/$announce", "/fhir/Patient/$withdraw",
                 "/fhir/$process-message"):  # fmt: skip
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, path)
            body = await assert_outcome(response, 405, "not-supported")
            assert response.headers["allow"] == "POST" and "POST it" in body["issue"][0]["diagnostics"]


async def test_unknown_path(client: httpx.AsyncClient) -> None:
    await assert_outcome(await client.get("/nothing/here"), 404)


async def test_request_id_comes_back(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata", headers={"X-Request-ID": "member-trace-12345"})
    assert response.headers["x-request-id"] == "member-trace-12345"
    made_up = await client.get("/fhir/metadata", headers={"X-Request-ID": "<script>"})
    assert made_up.headers["x-request-id"] != "<script>"


async def test_patient_data_is_kept_by_no_cache_and_never_sniffed(client: httpx.AsyncClient) -> None:
    """A browser or a proxy on the way keeps no copy of an answer with patient data, an error included
    (a security test found them without `Cache-Control`)."""
    created = await client.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR}
    )
    for response in (
        created,
        await client.get(f"/fhir/Patient/{created.json()['id']}"),
        await client.get("/fhir/Patient", params={"_id": created.json()["id"]}),
        await client.get("/fhir/Patient/no-such-id"),
    ):
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/healthz")).headers["x-content-type-options"] == "nosniff"
    page = await client.get("/app/")  # the pages set their own: said once (a review found it twice)
    assert page.headers.get_list("x-content-type-options") == ["nosniff"]
    assert page.headers.get_list("cache-control") == ["no-cache"]
