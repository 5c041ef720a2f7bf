"""The console's audit API refuses a parameter it does not know, on every endpoint that filters.

Found by a user trial: `GET /admin/api/audit/events?pateint=Patient/...` (a typo of `patient`) and a
`_search` body `{"bogus": "1"}` answered 200 with the whole trail, as if that were the selection asked for
(and the export would have handed it over). Now each is a 400 OperationOutcome naming the parameter, as
`/fhir/AuditEvent` answers; what the console itself sends keeps answering as before."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from rzcp.audit.events import AuditFacts, Decision, Practitioner
from tests.admin.conftest import new_patient
from tests.admin.test_console_api import outcome_of

UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"


@dataclass(frozen=True)
class Trail:
    """Records of one patient (known by a BSN), at one member, by one practitioner, on one day."""

    bsn: str
    patient: str
    ura: str
    uzi: str
    day: str
    ids: list[str]


async def _trail(app: Any, n: int = 3) -> Trail:
    """`n` permitted pulls about a new patient, written through the gateway's writer on a day of the 2000s
    (the charts count per member and day; the member is new, so the day may be shared)."""
    runtime = app.state.runtime
    bsn, patient_id = await new_patient(app)
    ura = f"{uuid.uuid4().int % 10**8:08d}"
    uzi = f"9{uuid.uuid4().int % 10**8:08d}"
    day = datetime(2003, 1, 1, 11, 0) + timedelta(days=uuid.uuid4().int % 2500)
    ids = []
    for _ in range(n):
        ids.append(uuid.uuid4().hex)
        await runtime.audit.record(
            AuditFacts(
                interaction="search-type",
                status=200,
                correlation_id="c",
                kind="system",
                member_ura=ura,
                client_id=f"ehr-{ura}",
                practitioner=Practitioner(UZI, uzi),
                patient=f"Patient/{patient_id}",
                decisions=(Decision(True, ura, "Condition", rule="default-permit"),),
                recorded=day,
                event_id=ids[-1],
            )
        )
    return Trail(bsn, f"Patient/{patient_id}", ura, uzi, day.date().isoformat(), ids[::-1])


def _refused(response: httpx.Response, *names: str) -> str:
    """The 400's diagnostics, checked to name each of `names`."""
    body = outcome_of(response, 400)
    [issue] = body["issue"]
    assert issue["code"] == "not-supported", issue
    for name in names:
        assert repr(name) in issue["diagnostics"], issue
    return str(issue["diagnostics"])


async def test_a_mistyped_filter_is_a_400_naming_it_on_every_filtering_endpoint(
    chief: httpx.AsyncClient, console_app: Any
) -> None:
    trail = await _trail(console_app)
    # the user trial's case: the typo was answered with the whole trail, the filter with the patient's
    right = await chief.get("/admin/api/audit/events", params={"patient": trail.patient})
    assert right.status_code == 200 and right.json()["total"] == len(trail.ids)
    said = _refused(await chief.get("/admin/api/audit/events", params={"pateint": trail.patient}), "pateint")
    assert "patient" in said  # and what it takes instead
    _refused(await chief.post("/admin/api/audit/events/_search", json={"bogus": "1"}), "bogus")
    _refused(
        await chief.post("/admin/api/audit/events/_search", json={"bsn": trail.bsn, "pateint": "x"}),
        "pateint",
    )
    # a known filter beside the typo does not make it pass, and every unknown name is said
    _refused(
        await chief.get(
            "/admin/api/audit/events", params={"member": trail.ura, "outcom": "denied", "x": "1"}
        ),
        "outcom",
        "x",
    )
    _refused(await chief.get("/admin/api/audit/events", params={"member": trail.ura, "cuont": "2"}), "cuont")
    _refused(await chief.post("/admin/api/audit/events/_search", json={"format": "csv"}), "format")
    _refused(
        await chief.get("/admin/api/audit/export", params={"pateint": trail.patient, "format": "ndjson"}),
        "pateint",
    )
    _refused(
        await chief.get("/admin/api/audit/export", params={"member": trail.ura, "formt": "csv"}), "formt"
    )
    _refused(await chief.get("/admin/api/audit/export", params={"member": trail.ura, "count": "2"}), "count")
    _refused(
        await chief.post("/admin/api/audit/export", json={"bogus": "1", "format": "ndjson"}),
        "bogus",
    )
    _refused(
        await chief.get("/admin/api/audit/stats", params={"sinse": trail.day, "until": trail.day}), "sinse"
    )
    _refused(await chief.get("/admin/api/audit/stats", params={"member": trail.ura}), "member")
    # a BSN is still never taken from a URL, whatever else is wrong with it
    assert (
        "BSN"
        in outcome_of(await chief.get("/admin/api/audit/events", params={"bsn": trail.bsn}), 400)["issue"][0][
            "diagnostics"
        ]
    )


async def test_the_filters_the_console_sends_still_answer(chief: httpx.AsyncClient, console_app: Any) -> None:
    trail = await _trail(console_app)
    every = {
        "patient": trail.patient, "practitioner": trail.uzi, "member": trail.ura, "since": trail.day,
        "until": trail.day, "purpose": "TREAT", "outcome": "success", "emergency": "false",
    }  # fmt: skip
    # the GET takes every filter but the BSN, and pages
    first = await chief.get("/admin/api/audit/events", params={**every, "count": "2"})
    assert first.status_code == 200, first.text
    assert first.json()["total"] == 3 and first.json()["next"]
    rest = await chief.get(
        "/admin/api/audit/events", params={**every, "count": "2", "page": first.json()["next"]}
    )
    assert rest.status_code == 200, rest.text
    assert [e["id"] for e in first.json()["events"] + rest.json()["events"]] == trail.ids
    # what the console's search form POSTs: the nine filters, the page size and the next page
    console = {**every, "bsn": trail.bsn, "count": "2"}
    posted = await chief.post("/admin/api/audit/events/_search", json=console)
    assert posted.status_code == 200, posted.text
    assert posted.json()["total"] == 3
    more = await chief.post(
        "/admin/api/audit/events/_search", json={**console, "page": posted.json()["next"]}
    )
    assert [e["id"] for e in posted.json()["events"] + more.json()["events"]] == trail.ids
    # the export: POSTed by the console with its format, or a GET without the BSN
    ndjson = await chief.post("/admin/api/audit/export", json={**every, "bsn": trail.bsn, "format": "ndjson"})
    assert ndjson.status_code == 200, ndjson.text
    assert [orjson.loads(line)["id"] for line in ndjson.content.splitlines()] == trail.ids
    as_csv = await chief.get("/admin/api/audit/export", params={**every, "format": "csv"})
    assert as_csv.status_code == 200, as_csv.text
    assert [row["id"] for row in csv.DictReader(io.StringIO(as_csv.text))] == trail.ids
    # the charts take a period, or nothing (the last 30 days)
    stats = await chief.get("/admin/api/audit/stats", params={"since": trail.day, "until": trail.day})
    assert stats.status_code == 200, stats.text
    assert stats.json()["pulls"][trail.ura] == [3]
    assert (await chief.get("/admin/api/audit/stats")).status_code == 200
