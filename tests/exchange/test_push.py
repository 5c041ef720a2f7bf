"""Message push end to end: a GP sends a discharge letter through the gateway to a hospital; the outbox
delivers it at least once with one idempotency key, and the receiver keeps it once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from rzcp.app import create_app
from rzcp.exchange.outbox import accept_message
from rzcp.exchange.pull import Requester
from rzcp.exchange.service import Exchange
from rzcp.exchange.tables import outbox
from rzcp.exchange.worker import OutboxWorker
from rzcp.fhir.search.definitions import SearchRegistry
from tests.exchange.region import (
    GATEWAY,
    Counting,
    Region,
    _migrate,
    gateway_settings,
    load_member,
    member_app,
    message_bundle,
    wait_for,
)
from tests.exchange.servers import free_port, serve

PROCESS = "POST /fhir/$process-message"


@dataclass
class Push:
    region: Region
    gp: httpx.AsyncClient
    gp_ura: str
    hospital_ura: str
    hospital: Counting
    hospital_db: str
    ggz_ura: str
    late_ura: str
    late_port: int
    late_db: str
    bsn: str
    tmp: Any


async def stored_bundles(db_url: str) -> list[str]:
    from rzcp.store.db import Database
    from rzcp.store.tables import resources

    db = Database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(select(resources.c.res_id).where(resources.c.res_type == "Bundle"))
            return [r.res_id for r in rows]
    finally:
        await db.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def push(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Push]:
    tmp = tmp_path_factory.mktemp("push")
    _gp_db, gp_patients = await load_member(tmp, "gp-", ["Condition"])
    zh_db, _ = await load_member(tmp, "zh-", ["Condition"])
    late_db, _ = await load_member(tmp, "late-", ["Condition"])
    settings = gateway_settings(database_url)
    await _migrate(database_url)
    hospital = member_app("Ziekenhuis Rijnstad", "x", zh_db)
    late_port = free_port()
    with (
        serve(create_app(settings)) as url,
        serve(hospital) as zh_url,
        serve(member_app("GGZ", "x", zh_db)) as ggz_url,
    ):
        region = Region(settings, url)
        gp = await region.add_member("Huisartsenpraktijk De Linde", "huisartsen", "http://127.0.0.1:9")
        zh = await region.add_member("Ziekenhuis Rijnstad", "ziekenhuizen-labs", zh_url)
        ggz = await region.add_member("GGZ De Oever", "ggz", ggz_url)
        late = await region.add_member(
            "Verpleeghuis Later", "verpleging-verzorging", f"http://127.0.0.1:{late_port}"
        )
        ids = await region.announce(gp.ura, gp_patients)
        bsn = next(iter(gp_patients.values()))
        await region.consent(ids[bsn], {"permit": {"to": ["ziekenhuizen-labs", "verpleging-verzorging"]}})
        client = await region.client_for(await region.add_client(gp.ura))
        yield Push(
            region, client, gp.ura, zh.ura, hospital, zh_db, ggz.ura, late.ura, late_port, late_db, bsn, tmp
        )
        await client.aclose()
        await region.close()


async def status_of(http: httpx.AsyncClient, location: str) -> dict[str, Any]:
    response = await http.get(location.replace("http://gateway.test", ""))
    assert response.status_code == 200, response.text
    return response.json()


async def completed(http: httpx.AsyncClient, location: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        task = await status_of(http, location)
        return task if task["status"] in ("completed", "failed", "rejected") else None

    return await wait_for(done)


async def test_a_push_is_delivered_once(push: Push) -> None:
    bundle = message_bundle(push.hospital_ura, push.bsn)
    response = await push.gp.post("/fhir/$process-message", json=bundle)
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location.startswith(f"{GATEWAY}/$process-message/")
    task = await completed(push.gp, location)
    assert task["status"] == "completed"
    message_id = task["id"]
    assert (await stored_bundles(push.hospital_db)).count(message_id) == 1
    # The sender repeats its POST (same Bundle.id): the same message, not a second delivery.
    again = await push.gp.post("/fhir/$process-message", json=bundle)
    assert again.status_code == 202 and again.headers["location"] == location
    await asyncio.sleep(0.5)
    assert (await stored_bundles(push.hospital_db)).count(message_id) == 1


async def test_a_push_without_consent_is_refused(push: Push) -> None:
    response = await push.gp.post("/fhir/$process-message", json=message_bundle(push.ggz_ura, push.bsn))
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"
    async with push.region.db.read() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.receiver_ura == push.ggz_ura)
        )
    assert count == 0


async def test_a_malformed_message_is_refused(push: Push) -> None:
    bad = message_bundle(push.hospital_ura, push.bsn)
    bad["entry"] = bad["entry"][1:]
    response = await push.gp.post("/fhir/$process-message", json=bad)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("change", "element"),
    [
        # One Coding where a list belongs: it could be the code a refusal names, so it is not guessed at.
        (
            {"type": {"coding": {"system": "http://loinc.org", "code": "18842-5"}}},
            "Bundle.entry.2.resource.type.coding",
        ),
        ({"bogus": 1}, "Bundle.entry.2.resource.bogus"),  # an element R4 does not have
        ({"status": 5}, "Bundle.entry.2.resource.status"),  # a code that is not a string
    ],
)
async def test_a_message_carrying_invalid_fhir_is_refused_naming_it_and_not_stored(
    push: Push, change: dict[str, Any], element: str
) -> None:
    """The receiver gets valid FHIR only: a message is validated like any resource written to the store."""
    bad = message_bundle(push.hospital_ura, push.bsn)
    bad["entry"][2]["resource"].update(change)
    response = await push.gp.post("/fhir/$process-message", json=bad)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [element]
    async with push.region.db.read() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.sender_key == bad["id"])
        )
    assert count == 0


async def test_a_push_to_a_member_that_is_down_and_comes_back(push: Push) -> None:
    response = await push.gp.post("/fhir/$process-message", json=message_bundle(push.late_ura, push.bsn))
    assert response.status_code == 202
    location = response.headers["location"]

    async def retried() -> bool:
        task = await status_of(push.gp, location)
        return task["status"] == "in-progress" and task["output"][0]["valueInteger"] >= 2

    await wait_for(retried)
    late = member_app("Verpleeghuis Later", "x", push.late_db)
    with serve(late, push.late_port):
        task = await completed(push.gp, location)
    assert task["status"] == "completed"
    assert (await stored_bundles(push.late_db)).count(task["id"]) == 1
    assert late.paths.count(PROCESS) == 1


async def test_workers_in_several_processes_deliver_each_message_once(push: Push) -> None:
    """Three workers (the gateway's own and two more, each with its own engine and HTTP client, as in
    other processes) compete for 30 messages: each reaches the receiver once."""
    settings = push.region.settings
    exchanges = [Exchange.build(settings, SearchRegistry.default()) for _ in range(2)]
    sender = Requester(push.gp_ura, "huisartsen")
    before = push.hospital.paths.count(PROCESS)
    async with push.region.db.write() as conn:
        for _ in range(30):
            await accept_message(exchanges[0], conn, sender, message_bundle(push.hospital_ura, push.bsn))
    from rzcp.store.db import Database

    dbs = [Database(settings.database_url) for _ in exchanges]
    workers = [OutboxWorker(db, ex, settings, batch=5) for db, ex in zip(dbs, exchanges, strict=True)]
    try:
        for worker in workers:
            worker.start()

        async def all_delivered() -> bool:
            async with push.region.db.read() as conn:
                pending = await conn.scalar(
                    select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
                )
            return pending == 0

        await wait_for(all_delivered, timeout=30)
    finally:
        for worker in workers:
            await worker.stop()
        for ex, db in zip(exchanges, dbs, strict=True):
            await ex.aclose()
            await db.dispose()
    assert push.hospital.paths.count(PROCESS) - before == 30


class HoldFirstAnswer:
    """A receiver that processes the first message, then holds its answer (the gateway dies meanwhile)."""

    def __init__(self, app: Any, hold: float) -> None:
        self.app = app
        self.hold = hold
        self.keys: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/fhir/$process-message":
            await self.app(scope, receive, send)
            return
        self.keys.append(dict(scope["headers"]).get(b"idempotency-key", b"").decode())
        first = len(self.keys) == 1
        held: list[Any] = []

        async def keep(message: Any) -> None:
            held.append(message)

        await self.app(scope, receive, keep)
        if first:
            await asyncio.sleep(self.hold)
        for message in held:
            await send(message)


def start_gateway(database_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RZCP_DATABASE_URL": database_url,
        "RZCP_PUBLIC_BASE_URL": GATEWAY,
        "RZCP_AUTO_MIGRATE": "false",
        "RZCP_OUTBOX_LEASE_SECONDS": "2",
        "RZCP_OUTBOX_POLL_SECONDS": "0.1",
        "RZCP_OUTBOX_RETRY_SECONDS": "0.2",
    }
    command = [sys.executable, "-m", "uvicorn", "rzcp.app:app_from_environment", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(command, env=env)


async def wait_up(url: str) -> None:
    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(up, timeout=30, every=0.2)


@pytest.mark.slow
async def test_a_gateway_killed_mid_delivery(push: Push, database_url: str) -> None:
    receiver_db, _ = await load_member(push.tmp, "rcv-", ["Condition"])
    receiver = HoldFirstAnswer(member_app("Ziekenhuis Oost", "x", receiver_db), hold=4.0)
    with serve(receiver) as receiver_url:
        member = await push.region.add_member(
            "Ziekenhuis Oost", "ziekenhuizen-labs", receiver_url, timeout=10
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        first = start_gateway(database_url, port)
        try:
            await wait_up(url)
            region = Region(push.region.settings, url)
            http = await region.client_for(await region.add_client(push.gp_ura))
            response = await http.post("/fhir/$process-message", json=message_bundle(member.ura, push.bsn))
            assert response.status_code == 202
            location = response.headers["location"]

            async def processed() -> bool:  # the receiver has stored it and holds the answer
                return len(await stored_bundles(receiver_db)) >= 1

            await wait_for(processed, timeout=30)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        second = start_gateway(database_url, port)
        try:
            await wait_up(url)
            await http.aclose()
            http = await region.client_for(await region.add_client(push.gp_ura))
            task = await completed(http, location)
            await http.aclose()
            await region.close()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
    assert task["status"] == "completed"
    assert len(receiver.keys) == 2 and receiver.keys[0] == receiver.keys[1] == task["id"]
    assert (await stored_bundles(receiver_db)).count(task["id"]) == 1
