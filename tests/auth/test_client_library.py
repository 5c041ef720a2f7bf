"""The happy paths with real client libraries against a live gateway on a loopback port: authlib's
OAuth 2 client (private_key_jwt, RFC 7523) gets a SMART Backend Services token, fhirpy reads with it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from fhirpy import AsyncFHIRClient

from rzcp.app import create_app
from tests.conftest import FHIR, PRACTITIONER, make_settings, register_system

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def smart_exp() -> dict[str, int]:
    """authlib signs assertions for an hour by default; SMART allows five minutes at most."""
    return {"exp": int(time.time()) + 240}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def live_gateway(app: Any, database_url: str) -> AsyncIterator[tuple[str, Any]]:
    """A uvicorn server on 127.0.0.1 serving a gateway on the suite's database."""
    port = free_port()
    gateway = create_app(make_settings(database_url))
    server = uvicorn.Server(uvicorn.Config(gateway, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}", gateway
    server.should_exit = True
    await task


async def test_authlib_gets_a_token_and_fhirpy_reads(app: Any, live_gateway: tuple[str, Any]) -> None:
    base, _gateway = live_gateway
    system = await register_system(app, scope="system/Patient.cruds system/Observation.rs")
    async with httpx.AsyncClient() as plain:
        config = (await plain.get(f"{base}/fhir/.well-known/smart-configuration")).json()
    token_url = config["token_endpoint"]
    assert token_url == f"{base}/auth/token"

    auth = PrivateKeyJWT(token_url, headers={"kid": system.key.kid}, alg="RS384", claims=smart_exp())
    async with AsyncOAuth2Client(
        client_id=system.client_id,
        client_secret=system.key.as_pem(private=True),
        token_endpoint_auth_method=auth,
        scope="system/Patient.read",
    ) as oauth:
        oauth.register_client_auth_method(auth)
        token = await oauth.fetch_token(token_url, grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer"
    assert token["scope"] == "system/Patient.read"

    admin = await register_system(app, scope="system/*.cruds", role="admin")
    async with AsyncOAuth2Client(
        client_id=admin.client_id,
        client_secret=admin.key.as_pem(private=True),
        token_endpoint_auth_method=PrivateKeyJWT(
            token_url, headers={"kid": admin.key.kid}, alg="RS384", claims=smart_exp()
        ),
        scope="system/Patient.write",
    ) as oauth:
        writer = await oauth.fetch_token(token_url, grant_type="client_credentials")

    headers = {"X-Purpose-Of-Use": "TREAT", "X-Acting-Practitioner": PRACTITIONER, "Accept": FHIR}
    fhir_writer = AsyncFHIRClient(
        f"{base}/fhir", authorization=f"Bearer {writer['access_token']}", extra_headers=headers
    )
    patient = fhir_writer.resource("Patient", name=[{"family": "Librarian", "given": ["Fhirpy"]}])
    await patient.save()

    fhir = AsyncFHIRClient(
        f"{base}/fhir", authorization=f"Bearer {token['access_token']}", extra_headers=headers
    )
    read = await fhir.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == "Librarian"
    found = await fhir.resources("Patient").search(_id=patient.id).fetch_all()
    assert [p.id for p in found] == [patient.id]
    with pytest.raises(Exception, match=r"403|forbidden"):
        await fhir.resources("Observation").fetch()  # the token carries system/Patient.read only
