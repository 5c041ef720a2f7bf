"""What an operator relies on: liveness, readiness, metrics, and an OpenAPI document that matches the app."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rzcp.app import create_app
from rzcp.settings import Settings
from tests.conftest import BASE, gateway_client, make_settings

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_migrated(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok", "audit": "ok"}


async def test_readyz_on_an_unmigrated_database(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/readyz")
    await app.state.runtime.db.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"].startswith("at none")


async def test_readyz_when_the_role_may_not_append_to_the_trail(database_url: str) -> None:
    """An operator's walkthrough revoked the role's INSERT on the trail: every audited request was a 503
    while /readyz said ready, so a load balancer kept sending traffic there."""
    if not database_url.startswith("postgresql"):
        pytest.skip("grants are PostgreSQL's")
    role = f"rzcp_ready_{uuid.uuid4().hex[:8]}"
    owner = create_app(make_settings(database_url)).state.runtime.db
    try:
        async with owner.write() as conn:
            for statement in (
                f"CREATE ROLE {role} LOGIN",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
                f"REVOKE INSERT ON audit_events FROM {role}",
            ):
                await conn.execute(text(statement))
        as_role = make_url(database_url).set(username=role).render_as_string(hide_password=False)
        app = create_app(make_settings(as_role))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            response = await http.get("/readyz")
        await app.state.runtime.db.dispose()
        assert response.status_code == 503, response.text
        assert response.json()["checks"]["audit"] == "the database role may not append to the audit trail"
    finally:
        async with owner.write() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))
        await owner.dispose()


async def test_readyz_when_the_database_is_unreachable() -> None:
    app = create_app(make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/readyz")
    await app.state.runtime.db.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/fhir/Patient/some-secret-id-123")
    text = (await client.get("/metrics")).text
    assert "rzcp_http_requests_total" in text
    assert 'route="/fhir/{type}/{id}"' in text
    assert "some-secret-id-123" not in text


async def test_metrics_with_a_token_answer_its_holder_only(database_url: str) -> None:
    """Found by a security test: /metrics told anyone how the region is used (and that the development
    login was on). With RZCP_METRICS_TOKEN (required in production) only the scraper holding it reads it;
    the API documentation pages, which loaded scripts from a CDN, are not served."""
    app = create_app(make_settings(database_url, metrics_token="m" * 40))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401 and "rzcp_http" not in refused.text
        assert (await http.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {'m' * 40}"})
        assert scraped.status_code == 200 and "rzcp_http_requests_total" in scraped.text
        lower = await http.get("/metrics", headers={"Authorization": f"bearer {'m' * 40}"})  # RFC 7235
        assert lower.status_code == 200
        for page in ("/docs", "/redoc"):
            assert (await http.get(page)).status_code == 404
    await app.state.runtime.db.dispose()


async def test_openapi_document_matches_the_app(tmp_path: Path) -> None:
    """openapi/openapi.json is `rzcp openapi`'s output (the app with default settings); regenerate it when
    the API changes."""
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'openapi.db'}"))
    document = app.openapi()
    await app.state.runtime.aclose()
    checked_in = json.loads(OPENAPI_FILE.read_text())
    assert checked_in == json.loads(json.dumps(document)), "run: rzcp openapi > openapi/openapi.json"


def test_every_dependency_is_async(app: Any) -> None:
    """FastAPI runs a plain `def` dependency in the thread pool: a hop on every request (bench/README.md)."""
    import inspect

    from fastapi.routing import APIRoute

    def walk(dependant: Any) -> Any:
        for sub in dependant.dependencies:
            yield sub
            yield from walk(sub)

    sync = {
        f"{route.path}: {dep.call.__qualname__}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for dep in walk(route.dependant)
        if dep.call is not None
        and not (inspect.iscoroutinefunction(dep.call) or inspect.isasyncgenfunction(dep.call))
    }
    assert not sync, sorted(sync)


def _sample_path(path: str) -> str:
    """A concrete URL for a templated path: a served type, made-up ids."""
    values = {"type": "Patient", "id": "nobody", "vid": "1", "ura": "00000000", "client_id": "nobody"}
    values |= {"event_id": "1"}
    return path.format(**values)


async def test_the_document_says_which_operations_need_a_token(
    app: Any, anonymous: httpx.AsyncClient
) -> None:
    """Integrators generate clients from the document: every operation it marks as secured refuses a call
    without a token (401), and every one it marks open answers one without a 401."""
    document = app.openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes["memberSystem"]["flows"]["clientCredentials"]["tokenUrl"] == "/auth/token"
    refused, answered = [], []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            secured = bool(operation["security"])
            if secured:
                assert {name for need in operation["security"] for name in need} <= set(schemes)
            if secured and path.startswith("/fhir/"):
                headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
                assert {"X-Purpose-Of-Use", "X-Acting-Practitioner"} <= headers, path
            kwargs: dict[str, Any] = {"json": {}} if method in ("post", "put") else {}
            response = await anonymous.request(method.upper(), _sample_path(path), **kwargs)
            (refused if response.status_code == 401 else answered).append(f"{method.upper()} {path}")
            assert secured == (response.status_code == 401), (method, path, response.status_code)
    assert len(refused) > 30 and "GET /fhir/metadata" in answered and "POST /auth/token" in answered


async def test_what_the_document_reserves_for_member_systems_refuses_a_patient(app: Any) -> None:
    """Operations whose security names only `memberSystem` (pulls, announce, push) refuse a patient's
    token with a 403 OperationOutcome, and the document declares that answer."""
    import time

    from rzcp.auth.service import Endpoints

    urls = Endpoints(f"{BASE}/fhir")
    claims = {
        "kind": "patient",
        "sub": "dev:doc-test",
        "patient": "nobody",
        "scope": app.state.runtime.settings.patient_scopes,
        "client_id": "rzcp-patient-app",
        "exp": int(time.time()) + 300,
    }
    token, _ = await app.state.runtime.auth.tokens.issue(claims, issuer=urls.issuer, audience=urls.fhir_base)
    document = app.openapi()
    reserved = [
        (method, path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if path.startswith("/fhir/")
        and operation["security"]
        and all(set(need) == {"memberSystem"} for need in operation["security"])
    ]
    # (the suite's app keeps every type in its own store, so its document has no pull routes)
    assert ("post", "/fhir/Patient/$announce") in reserved and ("post", "/fhir/$process-message") in reserved
    async with gateway_client(app, Authorization=f"Bearer {token}") as patient:
        for method, path in reserved:
            assert "403" in document["paths"][path][method]["responses"]
            kwargs: dict[str, Any] = {"json": {}} if method == "post" else {}
            response = await patient.request(method.upper(), _sample_path(path), **kwargs)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["resourceType"] == "OperationOutcome"


async def test_a_nul_in_a_path_or_query_is_recorded_not_a_503(client: httpx.AsyncClient) -> None:
    """PostgreSQL's text holds no NUL: a patient reference with one in the audit record's index column
    failed the record's write (and its batch's), and the caller got a 503 (found by schemathesis)."""
    for url in (
        "/fhir/Patient/x%00",
        "/fhir/Patient/x1/$everything?patient=a%00b",
        "/fhir/AuditEvent?patient=%00",
        "/fhir/Condition?subject=%00",
    ):
        response = await client.get(url)
        assert 400 <= response.status_code < 500, (url, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_any_json_body_on_any_operation_that_takes_one_is_a_4xx(client: httpx.AsyncClient) -> None:
    """A number, null, a list, a string where an object belongs (found by schemathesis: `$evaluate` with
    the body `5` was a 500)."""
    document = client._transport.app.openapi()  # type: ignore[attr-defined]
    taking = [
        (method, path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    ]
    assert ("post", "/fhir/Consent/$evaluate") in taking and ("post", "/admin/api/clients") in taking
    bodies = (
        b"5",
        b"null",
        b"[]",
        b'"x"',
        b'{"resourceType": 5}',
        b'{"resourceType": "Parameters", "parameter": [5]}',
    )
    for method, path in taking:
        for body in bodies:
            for media in ("application/fhir+json", "application/json"):
                response = await client.request(
                    method.upper(), _sample_path(path), content=body, headers={"Content-Type": media}
                )
                assert 400 <= response.status_code < 500, (method, path, body, response.text)
