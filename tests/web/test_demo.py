"""The Quick start's first command, end to end: `rzcp demo` starts the gateway and its member organisations,
makes a few exchanges, and prints where the web apps are and commands to try. In a real browser, the
console's charts show those exchanges and the demo patient's access log shows who looked; the printed
commands do what they say when bash runs them; Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.web.conftest import dev_login_patient, dev_login_person, screenshot

pytestmark = pytest.mark.asyncio(loop_scope="session")

MEMBERS = (
    4  # the GP practice, the hospital, the pharmacy and the GGZ clinic, on the ports after the gateway's
)


def _free_block(size: int) -> int:
    """A first port with the `size - 1` ports after it free too (the demo takes consecutive ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + size > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports")


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


RZCP = str(Path(sys.executable).with_name("rzcp"))


def _launch(
    port: int, log: BinaryIO, *, interrupts_ignored: bool = False, cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`rzcp demo` on `port` in its own temporary folder, its stderr to `log`, and what it printed once its
    region is up. With `interrupts_ignored` it starts as a shell script's background job does: with SIGINT
    ignored. `cwd`: where the user runs it."""
    command = [RZCP, "demo", "--port", str(port)]
    if interrupts_ignored:
        command = ["bash", "-c", 'trap "" INT; exec "$@"', "demo", *command]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,  # its own process group, as in a terminal: Ctrl-C reaches every process
        cwd=cwd,
    )
    printed: list[str] = []
    reader = threading.Thread(
        target=lambda: printed.extend(line.decode() for line in iter(process.stdout.readline, b"")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + 240
    while not any("console" in line and "/admin/" in line for line in printed):
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            log.flush()
            raise AssertionError("rzcp demo did not come up:\n" + Path(log.name).read_text()[-3000:])
        time.sleep(0.2)
    return process, "".join(printed)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`rzcp demo` as a user runs it, and its printout parsed; killed at the end if a test did not stop it."""
    folder = tmp_path_factory.mktemp("demo")
    port = _free_block(MEMBERS + 1)
    log = (folder / "demo.log").open("wb")
    # run from the folder that holds the user's clone (`rzcp/`): its processes once imported that folder
    # instead of the installed package and failed (a new user's report)
    (folder / "rzcp" / "consent").mkdir(parents=True)
    process, text = _launch(port, log, cwd=folder)
    facts: dict[str, Any] = {
        "process": process,
        "printed": text,
        "port": str(port),
        "url": f"http://127.0.0.1:{port}",
        "bsn": re.search(r"with BSN (\d{9})", text).group(1),  # type: ignore[union-attr]
        "hospital_ura": re.search(r"Ziekenhuis.*URA (\d{8})", text).group(1),  # type: ignore[union-attr]
        "folder": Path(re.search(r"demo folder (\S+)", text).group(1)),  # type: ignore[union-attr]
        "log": folder / "demo.log",
        "gp_token": re.search(r"export GP_TOKEN=(\S+)", text).group(1),  # type: ignore[union-attr]
        "practitioner": re.search(r"X-Acting-Practitioner: ([^\"]+)", text).group(1),  # type: ignore[union-attr]
        "message": Path(re.search(r"--data @(\S+)", text).group(1)),  # type: ignore[union-attr]
    }
    try:
        yield facts
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the demo and the processes it started
            process.wait()
            shutil.rmtree(facts["folder"], ignore_errors=True)
        log.close()


def _stop(demo: dict[str, Any]) -> None:
    """Ctrl-C, as a user stops it in a terminal (to the whole process group): the demo and every process
    it started end, their ports free again, and it says it is stopping, not that a process failed."""
    process: subprocess.Popen[bytes] = demo["process"]  # type: ignore[assignment]
    os.killpg(process.pid, signal.SIGINT)
    process.wait(30)
    said = demo["log"].read_text()
    assert "stopping the gateway and the members it started" in said, said[-2000:]
    assert "a process stopped" not in said, said[-2000:]
    port = int(demo["port"])
    deadline = time.monotonic() + 15
    while any(_answers(p) for p in range(port, port + MEMBERS + 1)):
        assert time.monotonic() < deadline, "a process of the demo still answers after Ctrl-C"
        time.sleep(0.2)
    # Its folder held the clients' private keys: gone with the region.
    assert not demo["folder"].exists()


def _commands(printed: str) -> list[str]:
    """The printed lines a user pastes into bash: the exports and curls, with their continuation lines."""
    lines: list[str] = []
    continued = False
    for line in printed.splitlines():
        if continued or line.startswith(("export ", "curl ")):
            lines.append(line)
            continued = line.endswith("\\")
    return lines


def _as_bash_runs_them(commands: list[str]) -> list[str]:
    """The arguments each printed curl gets when bash runs the lines (curl itself replaced by a printf)."""
    script = "\n".join(["curl() { printf '%s\\n' \"$@\"; }", *commands])
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30)
    return ran.stdout.splitlines()


async def test_a_second_demo_on_the_same_ports_says_so_and_leaves_the_first_alone(
    demo: dict[str, Any],
) -> None:
    """A second demo loaded its data into the first one's members and then failed with a traceback (a new
    user's report): it now stops before anything, naming the port."""
    second = subprocess.run(
        [RZCP, "demo", "--port", demo["port"]], capture_output=True, text=True, timeout=60
    )
    assert second.returncode != 0
    assert f"port {demo['port']} is in use" in second.stderr and "--port" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr and "resources" not in second.stderr
    assert httpx.get(f"{demo['url']}/healthz", timeout=5).status_code == 200
    assert "export RZCP_DATABASE_URL=" in demo["printed"]  # the rzcp commands can reach the demo's gateway


async def test_the_demo_region_shows_its_exchanges_in_the_console_and_the_patient_app(
    chromium: Browser, demo: dict[str, Any]
) -> None:
    context = await chromium.new_context(base_url=demo["url"], viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await page.goto("/admin/")
        await page.get_by_role("button", name="English").click()
        await page.get_by_role("button", name="Log in", exact=True).click()
        await dev_login_person(page, "chief")
        await page.wait_for_url("**/admin/**")
        await page.get_by_role("link", name="Charts").click()
        pulls = page.locator(f"#chart-pulls svg rect.bar[data-series='{demo['hospital_ura']}']")
        await expect(pulls).to_have_count(1)  # today's bar: the demo's first pulls
        assert int(await pulls.get_attribute("data-value") or 0) >= 2
        await screenshot(page, "demo-console-charts")
        # the hospital's first pull: each member's decision says what decided it, and the consent shown
        # (the permission) says which of them it made: not the GGZ clinic's refusal
        await page.get_by_role("link", name="Audit search").click()
        await page.get_by_label("Member (URA)").fill(demo["hospital_ura"])
        await page.get_by_role("button", name="Search", exact=True).click()
        pull = page.locator("#audit-table tbody tr").filter(has_text="pull").filter(has_text="Condition")
        await pull.last.get_by_role("link", name="Open").click()
        decided = page.locator("#event-decision")
        await expect(decided).to_contain_text("from GGZ De Oever (00000401)")
        await expect(decided).to_contain_text("from Huisartsenpraktijk De Linde (00000101)")
        made = page.locator("#event-consent-decided")
        await expect(made).to_contain_text("This consent made 2 of the 3 decisions")
        await expect(made).to_contain_text("permitted Condition from Huisartsenpraktijk De Linde (00000101)")
        await expect(made).not_to_contain_text("GGZ De Oever")
        # permitted for one member and denied for another: "partly", each reason with its own word
        await expect(decided).to_contain_text("partly permitted")
        await expect(decided).not_to_contain_text("permitted permitted")
        # the record says what was returned, not only that something was
        await expect(page.locator("#record-title + dl")).to_contain_text(
            re.compile(r"Condition · returned · count: \d+")
        )
        await page.get_by_role("button", name="Log out").click()

        await page.goto("/app/")  # in English: the language chosen in the console holds here too
        await page.get_by_role("button", name="Log in", exact=True).click()
        await dev_login_patient(page, demo["bsn"])
        await page.get_by_role("link", name="Who looked", exact=True).click()
        accesses = page.locator("#log-list .access")
        await expect(accesses.first).to_be_visible()
        assert await accesses.count() >= 2
        await expect(page.locator("#log-list")).to_contain_text("Ziekenhuis Rijnstad")
        await screenshot(page, "demo-patient-access-log")
    finally:
        await context.close()
    assert not errors, errors

    # The printed push, as a user copies it: a new message (the demo's own went under another id).
    pushed = httpx.post(
        f"{demo['url']}/fhir/$process-message",
        content=demo["message"].read_bytes(),
        headers={
            "Authorization": f"Bearer {demo['gp_token']}",
            "X-Purpose-Of-Use": "TREAT",
            "X-Acting-Practitioner": demo["practitioner"],
            "Content-Type": "application/fhir+json",
        },
        timeout=30,
    )
    assert pushed.status_code == 202, pushed.text
    assert "message accepted for delivery" in pushed.text

    # ... and its Location followed as printed: bash must leave the `$` in `$process-message` alone, so
    # every URL is in single quotes and only the printed variables are left for bash to expand
    location = pushed.headers["Location"]
    assert "/$process-message/" in location, location
    commands = _commands(demo["printed"])
    for line in commands:
        expanded = set(re.findall(r"\$(\w+)", re.sub(r"'[^']*'", "", line)))
        assert expanded <= {"TOKEN", "GP_TOKEN", "PHARMACY_TOKEN", "LOCATION"}, line
    pasted = [line.replace("<the Location header above>", location) for line in commands]
    arguments = _as_bash_runs_them(pasted)
    assert f"{demo['url']}/fhir/$process-message" in arguments
    everything = re.compile(re.escape(demo["url"]) + r"/fhir/Patient/[^/]+/\$everything\?_count=50")
    assert any(everything.fullmatch(argument) for argument in arguments), arguments
    assert f"Authorization: Bearer {demo['gp_token']}" in arguments  # the printed tokens are expanded
    assert location in arguments, "the printed `export LOCATION=...` line changed the Location"
    followed = httpx.get(
        location,
        headers={
            "Authorization": f"Bearer {demo['gp_token']}",
            "X-Purpose-Of-Use": "TREAT",
            "X-Acting-Practitioner": demo["practitioner"],
        },
        timeout=30,
    )
    assert followed.status_code == 200, followed.text

    # the printed emergency, run as printed (real curl): nothing without consent, then break-the-glass
    lines = demo["printed"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# an emergency"))
    emergency = [line for line in _commands("\n".join(lines[start:])) if not line.startswith("export")][:3]
    token_line = next(line for line in _commands(demo["printed"]) if line.startswith("export TOKEN="))
    ran = subprocess.run(
        ["bash", "-c", "\n".join([token_line, *emergency])], capture_output=True, text=True, timeout=60
    )
    totals = ran.stdout.split()
    assert totals[0] == '"total":0', ran  # no consent: nothing, as for no data
    assert len(totals) == 2 and int(totals[1].split(":")[1]) > 0, ran  # the emergency rule's data
    assert "ETREAT" in emergency[1] and "X-Break-Glass-Reason" in emergency[1]
    # a pharmacy has no emergency department: the region's rule is for hospitals and GP posts (an
    # administrator's walkthrough found a pharmacy breaking the glass with the reason "curious")
    pharmacy = next(line for line in _commands(demo["printed"]) if line.startswith("export PHARMACY_TOKEN="))
    url = re.findall(r"(http://\S*/MedicationRequest\?patient=Patient/[\w-]+)", "\n".join(emergency))[0]
    glass = httpx.get(
        url,
        headers={
            "Authorization": f"Bearer {pharmacy.split('=', 1)[1]}",
            "X-Purpose-Of-Use": "ETREAT",
            "X-Break-Glass-Reason": "curious",
            "X-Acting-Practitioner": demo["practitioner"],
        },
        timeout=30,
    )
    assert glass.status_code == 200 and glass.json()["total"] == 0, glass.text  # as for no data

    # what it loaded, in words: one GGZ patient is "1 patient"
    said = demo["log"].read_text()
    assert re.search(r"^  GGZ De Oever: \d+ resources, 1 patient$", said, re.MULTILINE), said[:2000]
    _stop(demo)


async def test_ctrl_c_stops_a_demo_started_with_interrupts_ignored(tmp_path: Path) -> None:
    """Started as a script's background job (SIGINT ignored), Ctrl-C to its process group still stops the
    demo and everything it started, and it says so, not that a process failed (its servers hear the
    interrupt either way)."""
    port = _free_block(MEMBERS + 1)
    with (tmp_path / "demo.log").open("wb") as log:
        process, text = _launch(port, log, interrupts_ignored=True)
        try:
            folder = Path(re.search(r"demo folder (\S+)", text).group(1))  # type: ignore[union-attr]
            _stop({"process": process, "port": str(port), "log": tmp_path / "demo.log", "folder": folder})
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def test_ctrl_c_while_the_demo_prepares_leaves_no_folder_and_no_process() -> None:
    """Interrupted before its region is up (loading the data takes seconds), the demo still removes its
    temporary folder, with the clients' private keys, and leaves no member or gateway running."""
    port = _free_block(MEMBERS + 1)
    process = subprocess.Popen(
        [sys.executable, "-m", "rzcp.cli", "demo", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    folder = Path(re.search(r"preparing the region in (\S+)", line).group(1))  # type: ignore[union-attr]
    time.sleep(1.0)  # into the preparation
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert not folder.exists()
    assert not any(_answers(p) for p in range(port, port + MEMBERS + 1))


async def test_a_policy_the_demo_cannot_read_is_said_in_one_line_before_anything_is_loaded(
    tmp_path: Path,
) -> None:
    """The demo copies the region's policy (RZCP_CONSENT_POLICY_PATH, or the repository's) to switch its
    emergency rule on; a policy it cannot read was a traceback after the members' data had loaded."""
    missing = tmp_path / "policy.yaml"
    ran = subprocess.run(
        [RZCP, "demo", "--port", str(_free_block(MEMBERS + 1))],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RZCP_CONSENT_POLICY_PATH": str(missing)},
    )
    assert ran.returncode != 0
    assert f"Error: {missing}: cannot read the consent policy" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr and "resources" not in ran.stderr  # no member data loaded
