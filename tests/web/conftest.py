"""The web apps in a real browser: a gateway served by uvicorn on a loopback port (in a thread of its own,
with the development identity provider) and Debian's chromium driven by Playwright.

Playwright's own browser download cannot work here, so the browser is /usr/bin/chromium (or
RZCP_TEST_CHROMIUM); .ci/run installs it when missing. Each test gets a fresh browser context (no cookies,
no storage), so logins never leak between tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from rzcp.app import create_app
from rzcp.auth import registry
from rzcp.auth.devidp import DEV_OTP
from rzcp.runtime import Runtime
from tests.conftest import PRACTITIONER, SystemClient, make_settings, new_key

T = TypeVar("T")

CHROMIUM = os.environ.get("RZCP_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
#: People who log in to the console in these tests, by their development user name.
PEOPLE = {
    "dev:admin": "admin",
    "dev:auditor": "auditor",
    "dev:chief": "admin,auditor",
    "dev:member": "member",
}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveGateway:
    """A running gateway: its URL, its app, and a way to run coroutines on the server's own event loop
    (where its database engine lives) from a test."""

    url: str
    app: Any
    loop: asyncio.AbstractEventLoop

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime  # type: ignore[no-any-return]

    async def run(self, work: Awaitable[T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))  # type: ignore[arg-type]

    async def register_system(
        self, *, scope: str = "system/*.cruds", role: str = "member", category: str = "Z3"
    ) -> SystemClient:
        """A new member and a client of it with a fresh key (unique ids: tests share the database)."""
        ura = f"{uuid.uuid4().int % 10**8:08d}"
        client_id = f"ehr-{uuid.uuid4().hex[:10]}"
        key = new_key()

        async def work() -> None:
            async with self.runtime.db.write() as conn:
                await registry.add_member(
                    conn,
                    ura=ura,
                    name=f"Member {ura}",
                    category=category,
                    endpoint=f"https://{ura}.example/fhir",
                )
                await registry.add_client(
                    conn,
                    client_id=client_id,
                    member_ura=ura,
                    scope=scope,
                    role=role,
                    jwks={"keys": [key.as_dict(private=False)]},
                )

        await self.run(work())
        return SystemClient(client_id, ura, key)

    async def system_http(self, system: SystemClient, scope: str = "system/*.cruds") -> httpx.AsyncClient:
        """An HTTP client acting as `system`, with a token, a TREAT purpose and an acting practitioner."""
        http = httpx.AsyncClient(base_url=self.url, timeout=10)
        form = system.form(scope, aud=f"{self.url}/auth/token")
        response = await http.post("/auth/token", data=form)
        assert response.status_code == 200, response.text
        http.headers.update(
            {
                "Authorization": f"Bearer {response.json()['access_token']}",
                "Accept": "application/fhir+json",
                "X-Purpose-Of-Use": "TREAT",
                "X-Acting-Practitioner": PRACTITIONER,
            }
        )
        return http


@pytest.fixture(scope="package")
def live_gateway(database_url: str) -> Iterator[LiveGateway]:
    settings = make_settings(database_url, dev_idp=True, person_roles=PEOPLE, auto_migrate=True)
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start for the browser tests (see the log above)")
        time.sleep(0.05)
    yield LiveGateway(f"http://127.0.0.1:{port}", app, loop)
    server.should_exit = True
    thread.join(timeout=15)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(chromium: Browser, live_gateway: LiveGateway) -> AsyncIterator[BrowserContext]:
    ctx = await chromium.new_context(base_url=live_gateway.url, viewport={"width": 1100, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that fails the test on any uncaught script error (a broken page must not pass quietly)."""
    errors: list[str] = []
    pg = await context.new_page()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    assert not errors, f"script errors on the page: {errors}"


async def dev_login_patient(page: Page, bsn: str) -> None:
    """At the development identity provider's form: log in as the patient with this BSN."""
    await page.wait_for_url("**/auth/dev-idp**")
    await page.get_by_label("BSN").fill(bsn)
    await page.get_by_role("button", name="Log in").click()


async def dev_login_person(page: Page, username: str, *, second_factor: bool = True) -> None:
    """At the development identity provider's form: log in as a member of staff, with or without the OTP."""
    await page.wait_for_url("**/auth/dev-idp**")
    await page.get_by_label("User name").fill(username)
    if second_factor:
        await page.get_by_label("Second factor", exact=False).fill(DEV_OTP)
    await page.get_by_role("button", name="Log in").click()


async def screenshot(page: Page, name: str) -> Path:
    """A main screen as a PNG: into docs/screenshots/ (for the README) when RZCP_SCREENSHOTS=1, else into a
    temporary folder, so a test run leaves the checked-in pictures alone."""
    folder = (
        SCREENSHOTS
        if os.environ.get("RZCP_SCREENSHOTS") == "1"
        else Path(tempfile.gettempdir()) / "rzcp-shots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000, "the screenshot is empty"
    return path
