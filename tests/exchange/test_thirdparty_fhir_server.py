"""The FHIR REST adapter against a FHIR server this project did not write: Medplum's FHIR router and
in-memory repository (npm @medplum/fhir-router, Apache-2.0), run by node behind a 40-line HTTP shim
(tests/exchange/thirdparty/server.cjs) on a loopback port. Search, paging links, read and the checks are
Medplum's implementation of FHIR R4, not ours.

The package is installed on first use into tests/.thirdparty/medplum (gitignored), within 5 minutes. Without
node/npm, or when the install fails, the test is skipped with the reason, except under CI, where it fails.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rzcp.exchange.adapters import Member, MemberAdapter, ProblemCode, ReadStatus, SearchQuery
from rzcp.exchange.limits import ResponseLimits

HERE = Path(__file__).resolve().parent / "thirdparty"
INSTALL = Path(__file__).resolve().parents[1] / ".thirdparty" / "medplum"
FHIR = "application/fhir+json"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the third-party FHIR server is required under CI: {reason}")
    pytest.skip(reason)


def _install() -> Path:
    modules = INSTALL / "node_modules"
    if (modules / "@medplum" / "fhir-router" / "package.json").exists():
        return modules
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        _unavailable("node and npm are needed to install @medplum/fhir-router")
    INSTALL.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "package.json", INSTALL / "package.json")
    try:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],  # type: ignore[list-item]
            cwd=INSTALL,
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"npm install @medplum/fhir-router failed: {type(exc).__name__}")
    return modules


def _node_flags() -> list[str]:
    """Medplum's core expects a global WebSocket: built into node 22+, behind a flag in node 20 and 21."""
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0])
    return ["--experimental-websocket"] if major < 22 else []


@pytest.fixture(scope="module")
def medplum() -> Iterator[str]:
    modules = _install()
    proc = subprocess.Popen(
        ["node", *_node_flags(), str(HERE / "server.cjs"), "0"],
        env={**os.environ, "MEDPLUM_MODULES": str(modules)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if line.startswith("LISTENING "):
                    port = int(line.split()[1])
        if port is None:
            _unavailable("the Medplum FHIR server did not start within 60 s")
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _observation(res_id: str, patient: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 70, "unit": "/min"},
    }


RESOURCES = [
    {"resourceType": "Patient", "id": "mp-p1", "name": [{"family": "Jansen"}]},
    {"resourceType": "Patient", "id": "mp-p2", "name": [{"family": "de Vries"}]},
    *(_observation(f"mp-o{i}", "mp-p1", "8867-4" if i % 2 else "29463-7") for i in range(1, 8)),
    _observation("mp-o9", "mp-p2", "8867-4"),
    {"resourceType": "Condition", "id": "mp-c1", "subject": {"reference": "Patient/mp-p1"}},
]


@pytest.fixture
def limits() -> ResponseLimits:
    return ResponseLimits()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def loaded(medplum: str) -> AsyncIterator[Member]:
    async with httpx.AsyncClient(headers={"Content-Type": FHIR}) as http:
        for resource in RESOURCES:
            answer = await http.put(f"{medplum}/{resource['resourceType']}/{resource['id']}", json=resource)
            assert answer.status_code in {200, 201}, answer.text
    yield Member("90000099", "Medplum member", "Z3", medplum, timeout=10.0)


async def test_search_and_read_against_medplum(adapter: MemberAdapter, loaded: Member) -> None:
    outcome = await adapter.search(loaded, SearchQuery("Observation", "mp-p1"))
    assert not outcome.failed and not outcome.partial and outcome.problems == []
    assert sorted(r["id"] for r in outcome.resources) == [f"mp-o{i}" for i in range(1, 8)]
    # Medplum's in-memory repository pages without `next` links: the adapter notices from `total`.
    outcome = await adapter.search(loaded, SearchQuery("Observation", "mp-p1", [("_count", "3")]))
    assert len(outcome.resources) == 3 and outcome.partial and not outcome.failed
    assert [p.code for p in outcome.problems] == [ProblemCode.TRUNCATED]
    outcome = await adapter.search(
        loaded, SearchQuery("Observation", "mp-p1", [("code", "http://loinc.org|8867-4")])
    )
    assert sorted(r["id"] for r in outcome.resources) == ["mp-o1", "mp-o3", "mp-o5", "mp-o7"]
    assert outcome.problems == []  # Medplum applied the parameter itself: nothing to drop
    outcome = await adapter.search(loaded, SearchQuery("Patient", "mp-p2"))
    assert [r["id"] for r in outcome.resources] == ["mp-p2"]
    read = await adapter.read(loaded, "Observation", "mp-o9", patient="mp-p2")
    assert read.status is ReadStatus.FOUND and read.resource and read.resource["valueQuantity"]["value"] == 70
    assert (
        await adapter.read(loaded, "Observation", "mp-o9", patient="mp-p1")
    ).status is ReadStatus.NOT_FOUND
    assert (await adapter.read(loaded, "Observation", "no-such")).status is ReadStatus.NOT_FOUND


async def test_medplum_applies_parameters_and_the_adapter_agrees(
    adapter: MemberAdapter, loaded: Member
) -> None:
    outcome = await adapter.search(loaded, SearchQuery("Observation", "mp-p1", [("status", "amended")]))
    assert outcome.resources == [] and outcome.problems == [] and not outcome.failed
    outcome = await adapter.search(loaded, SearchQuery("Condition", "mp-p1"))
    assert [r["id"] for r in outcome.resources] == ["mp-c1"] and outcome.problems == []
