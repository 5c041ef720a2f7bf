"""Schemathesis against the gateway's own OpenAPI document: no operation answers with a server error.

Schemathesis (4.x) generates the cases from `app.openapi()` (positive and negative data for every path,
query, header and body it declares); the suite's own async `client` sends them, in process, so the run
shares the event loop, the database of each backend and whatever credentials the fixture carries, which
`schemathesis.openapi.from_asgi` (its own sync test client in another thread and loop) could not. Each
response goes through schemathesis' `not_a_server_error` check, and every 4xx from /fhir must be an
OperationOutcome.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from rzcp.app import create_app
from tests.conftest import make_settings

#: Resource types for the `{type}` path parameter: the document allows any string, and a random one is
#: only ever a 404, so positive cases pick served types (negative cases still send anything).
TYPES = ["Patient", "Observation", "Organization", "Encounter", "Consent", "AuditEvent", "Endpoint"]


def _document() -> dict[str, Any]:
    """The document the app itself serves at /openapi.json (no database is touched to build it)."""
    document = create_app(make_settings("sqlite+aiosqlite:///unused.db")).openapi()
    for path, item in document["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if (
                    path.startswith("/fhir/{type}")
                    and parameter["in"] == "path"
                    and parameter["name"] == "type"
                ):
                    parameter["schema"] = {**parameter.get("schema", {}), "type": "string", "enum": TYPES}
    return document


SCHEMA = schemathesis.openapi.from_dict(_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
EXAMPLES_PER_OPERATION = 25


def _send_kwargs(case: Any, base_url: str) -> dict[str, Any]:
    """The case as httpx.AsyncClient.request arguments (schemathesis builds requests-style ones)."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "params": kwargs.get("params") or None,
        "headers": {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "connection"},
        "cookies": kwargs.get("cookies") or None,
    }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, dict):
        out["data"] = data
    elif data is not None:
        out["content"] = data
    if kwargs.get("files"):
        out["files"] = kwargs["files"]
    return out


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_no_server_error(client: httpx.AsyncClient, operation: Any, data: st.DataObject) -> None:
    mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    sent = _send_kwargs(case, str(client.base_url))
    response = await client.request(**sent)
    case.validate_response(response, checks=[not_a_server_error])
    if operation.path.startswith("/fhir/") and 400 <= response.status_code < 500:
        body = response.json()
        assert body.get("resourceType") == "OperationOutcome", (
            sent,
            response.status_code,
            response.text[:300],
        )
