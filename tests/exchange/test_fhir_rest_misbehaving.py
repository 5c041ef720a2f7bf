"""The FHIR REST adapter against members that misbehave: a real HTTP server on a loopback port, scripted
per test (slow, down, 500, garbage, another patient's data, the wrong type, an ignored parameter ...)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rzcp_fhir_rest.checks import EntryChecker

from rzcp.exchange.adapters import (
    AdapterContext,
    AdapterRegistry,
    DeliveryStatus,
    Member,
    MemberAdapter,
    ProblemCode,
    ReadStatus,
    SearchQuery,
)
from rzcp.exchange.breaker import BreakerState
from rzcp.exchange.http import build_http_client
from tests.exchange.conftest import FakeClock
from tests.exchange.servers import ScriptedMember, answer, free_port, searchset, slow

PATIENT = "p1"


def obs(res_id: str, patient: str = PATIENT, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


def codes(outcome: Any) -> list[ProblemCode]:
    return [p.code for p in outcome.problems]


Scripted = tuple[ScriptedMember, Member]


async def test_a_good_answer_passes_with_the_patient_parameter_sent(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    server.handler = answer(searchset(obs("o1"), obs("o2")))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT, [("status", "final")]))
    assert [r["id"] for r in outcome.resources] == ["o1", "o2"]
    assert not outcome.failed and not outcome.partial and outcome.problems == []
    hit = server.hits[0]
    assert hit.path == "/fhir/Observation"
    sent = parse_qsl(hit.query)
    assert sent[:2] == [("patient", "Patient/p1"), ("status", "final")]
    assert sent[2][0] == "_count" and int(sent[2][1]) > 20  # pages as large as the member allows
    assert hit.headers["accept"] == "application/fhir+json"


async def test_slow_member_times_out_within_its_own_deadline(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    server.handler = slow(3.0, searchset(obs("o1")))
    quick = Member(member.ura, member.name, member.category, member.base_url, timeout=0.4)
    started = time.monotonic()
    outcome = await adapter.search(quick, SearchQuery("Observation", PATIENT))
    assert time.monotonic() - started < 1.5
    assert outcome.failed and outcome.resources == []
    assert codes(outcome) == [ProblemCode.TIMEOUT]


async def test_member_that_is_down_is_reported_unreachable(adapter: MemberAdapter) -> None:
    down = Member("00000009", "Down", "Z3", f"http://127.0.0.1:{free_port()}/fhir", timeout=2.0)
    outcome = await adapter.search(down, SearchQuery("Observation", PATIENT))
    assert outcome.failed
    assert codes(outcome) == [ProblemCode.UNREACHABLE]
    read = await adapter.read(down, "Observation", "o1")
    assert read.status is ReadStatus.FAILED and read.problems[0].code is ProblemCode.UNREACHABLE


async def test_a_500_is_reported_and_not_retried(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    server.handler = answer(b'{"resourceType":"OperationOutcome"}', status=500)
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and codes(outcome) == [ProblemCode.HTTP_ERROR]
    assert len(server.hits) == 1


async def test_reads_are_retried_on_503_with_backoff(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted

    async def flaky(request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if request["n"] < 3:
            return 503, {}, b"{}"
        if request["hit"].path.endswith("/o1"):
            return 200, {}, orjson.dumps(obs("o1"))
        return 200, {}, searchset(obs("o1"))

    server.handler = flaky
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"] and not outcome.failed
    assert len(server.hits) == 3
    server.hits.clear()
    read = await adapter.read(member, "Observation", "o1")
    assert read.status is ReadStatus.FOUND and read.resource == obs("o1")
    assert len(server.hits) == 3  # refused twice again (the count restarted), then read


async def test_retries_stop_after_the_policy_and_the_member_is_reported(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    server.handler = answer(b"{}", status=503)
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and codes(outcome) == [ProblemCode.HTTP_ERROR]
    assert len(server.hits) == 3  # the first try and two retries


async def test_a_delivery_is_never_retried_by_the_adapter(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    server.handler = answer(b'{"resourceType":"OperationOutcome"}', status=503, **{"Retry-After": "7"})
    outcome = await adapter.deliver(member, message(), idempotency_key="msg-1")
    assert outcome.status is DeliveryStatus.RETRY_LATER
    assert outcome.http_status == 503 and outcome.retry_after == 7.0
    assert len(server.hits) == 1


async def test_garbage_json_is_reported_never_passed_on(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    server.handler = answer(b'{"resourceType": "Bundle", "entry": [ {"resource": ')
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and outcome.resources == []
    assert codes(outcome) == [ProblemCode.INVALID_JSON]
    server.handler = answer(b"<html>maintenance</html>")
    read = await adapter.read(member, "Observation", "o1")
    assert read.status is ReadStatus.FAILED and read.problems[0].code is ProblemCode.INVALID_JSON
    server.handler = answer(orjson.dumps({"resourceType": "Patient", "id": "x"}))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and codes(outcome) == [ProblemCode.INVALID_ANSWER]


async def test_another_patients_entries_are_dropped_and_reported(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    unlinked = {"resourceType": "Observation", "id": "o4", "status": "final"}
    server.handler = answer(searchset(obs("o1"), obs("o2", patient="p2"), obs("o3"), unlinked))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1", "o3"]
    assert not outcome.failed
    dropped = {(p.code, p.reference) for p in outcome.problems}
    assert dropped == {
        (ProblemCode.OTHER_PATIENT, "Observation/o2"),
        (ProblemCode.OTHER_PATIENT, "Observation/o4"),
    }


async def test_a_read_of_another_patients_resource_is_not_found(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    server.handler = answer(orjson.dumps(obs("o2", patient="p2")))
    read = await adapter.read(member, "Observation", "o2", patient=PATIENT)
    assert read.status is ReadStatus.NOT_FOUND and read.resource is None
    assert read.problems[0].code is ProblemCode.OTHER_PATIENT
    server.handler = answer(orjson.dumps(obs("o9")))
    read = await adapter.read(member, "Observation", "o2")
    assert read.status is ReadStatus.FAILED and read.problems[0].code is ProblemCode.INVALID_ENTRY


async def test_the_wrong_type_is_dropped_and_reported(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
    server.handler = answer(searchset(obs("o1"), condition, {"no": "type"}))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert codes(outcome) == [ProblemCode.WRONG_TYPE, ProblemCode.INVALID_ENTRY]
    server.handler = answer(orjson.dumps(condition))
    read = await adapter.read(member, "Observation", "c1")
    assert read.status is ReadStatus.FAILED and read.problems[0].code is ProblemCode.WRONG_TYPE


async def test_ignored_search_parameters_are_applied_again(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    heart_rate = obs("o1")
    other_code = obs("o2", code={"coding": [{"system": "http://loinc.org", "code": "29463-7"}]})
    amended = obs("o3", status="amended")
    lab = obs("o4", category=[{"coding": [{"code": "laboratory"}]}])
    server.handler = answer(searchset(heart_rate, other_code, amended, lab))  # ignores every parameter
    query = SearchQuery("Observation", PATIENT, [("code", "http://loinc.org|8867-4"), ("status", "final")])
    outcome = await adapter.search(member, query)
    assert [r["id"] for r in outcome.resources] == ["o1", "o4"]
    assert {(p.code, p.reference) for p in outcome.problems} == {
        (ProblemCode.NOT_MATCHING, "Observation/o2"),
        (ProblemCode.NOT_MATCHING, "Observation/o3"),
    }
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT, [("category", "laboratory")]))
    assert [r["id"] for r in outcome.resources] == ["o4"]
    # Patient searches go by _id, and the id is checked.
    server.handler = answer(
        searchset({"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"})
    )
    outcome = await adapter.search(member, SearchQuery("Patient", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["p1"]
    assert "_id=p1" in server.hits[-1].query


async def test_member_warnings_and_includes_are_not_passed_on(
    adapter: MemberAdapter, scripted: Scripted
) -> None:
    server, member = scripted
    body = orjson.loads(searchset(obs("o1")))
    body["entry"] += [
        {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
        {
            "resource": {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "index rebuilding"}]},
            "search": {"mode": "outcome"},
        },
    ]
    server.handler = answer(orjson.dumps(body))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert [(p.code, p.detail) for p in outcome.problems] == [
        (ProblemCode.MEMBER_WARNING, "index rebuilding")
    ]


async def test_response_limits_bytes_entries_and_pages(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    big = obs("o1", note=[{"text": "x" * 70_000}])  # the test limit is 64 KiB
    server.handler = answer(searchset(big))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and codes(outcome) == [ProblemCode.TOO_LARGE]

    server.handler = answer(searchset(*(obs(f"o{i}") for i in range(60))))  # the limit is 50
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert len(outcome.resources) == 50 and outcome.partial and not outcome.failed
    assert codes(outcome) == [ProblemCode.TRUNCATED]

    async def endless(request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        n = request["n"]
        return 200, {}, searchset(obs(f"o{n}"), next_url=f"{member.base_url}/Observation?page={n + 1}")

    server.hits.clear()
    server.handler = endless
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1", "o2", "o3"]  # max_pages is 3
    assert outcome.partial and codes(outcome) == [ProblemCode.TRUNCATED]
    assert len(server.hits) == 3 and server.hits[1].query == "page=2"


@pytest.mark.parametrize(
    "link",
    [
        "http://127.0.0.2:1/steal?x=1",
        # the same server, another member's base on it (a vendor serving several: a security test's worry)
        "{origin}/other-practice/fhir/Observation?page=2",
        "{origin}/fhir/../other-practice/fhir/Observation?page=2",
        "{origin}/fhir/%2e%2e/other-practice/fhir/Observation",
        "{origin}/fhirx/Observation?page=2",
        # read otherwise by some servers: `..;` (Tomcat, Jetty), a backslash (IIS), a double encoding
        "{origin}/fhir/..;/..;/other-practice/fhir/Observation",
        "{origin}/fhir/..%5c..%5cother-practice/fhir",
        "{origin}/fhir/%252e%252e/%252e%252e/other-practice/fhir",
    ],
)
async def test_a_next_link_away_from_the_members_base_is_not_followed(
    adapter: MemberAdapter, scripted: Scripted, link: str
) -> None:
    server, member = scripted
    origin = member.base_url.removesuffix("/fhir")
    server.handler = answer(searchset(obs("o1"), next_url=link.format(origin=origin)))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert outcome.partial and codes(outcome) == [ProblemCode.INVALID_ANSWER]
    assert len(server.hits) == 1


async def test_a_lost_second_page_keeps_the_first(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted

    async def second_fails(request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if request["n"] == 1:
            return 200, {}, searchset(obs("o1"), next_url=f"{member.base_url}/Observation?page=2")
        return 500, {}, b"{}"

    server.handler = second_fails
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert outcome.partial and not outcome.failed and codes(outcome) == [ProblemCode.HTTP_ERROR]


async def test_the_breaker_opens_after_failures_and_closes_after_its_cool_down(
    adapter: MemberAdapter, scripted: Scripted, clock: FakeClock
) -> None:
    server, member = scripted
    server.handler = answer(b"{}", status=500)
    for _ in range(3):  # the test board's threshold
        outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
        assert codes(outcome) == [ProblemCode.HTTP_ERROR]
    breakers = adapter.context.breakers  # type: ignore[attr-defined]
    assert breakers.for_member(member.ura).state is BreakerState.OPEN
    calls = len(server.hits)
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and codes(outcome) == [ProblemCode.CIRCUIT_OPEN]
    delivery = await adapter.deliver(member, message(), idempotency_key="m-open")
    assert delivery.status is DeliveryStatus.RETRY_LATER and delivery.retry_after == 30
    assert len(server.hits) == calls  # nothing reached the member while open

    clock.now += 30  # the cool-down: one trial goes through, and succeeds
    server.handler = answer(searchset(obs("o1")))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert breakers.for_member(member.ura).state is BreakerState.CLOSED


async def test_client_errors_do_not_open_the_breaker(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    server.handler = answer(b'{"resourceType":"OperationOutcome"}', status=400)
    for _ in range(5):
        outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
        assert outcome.failed and codes(outcome) == [ProblemCode.HTTP_ERROR]
    assert adapter.context.breakers.for_member(member.ura).state is BreakerState.CLOSED  # type: ignore[attr-defined]


def message() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {"system": "urn:rzcp:events", "code": "discharge-letter"},
                    "source": {"endpoint": "urn:rzcp:member:00000002"},
                }
            }
        ],
    }


async def test_deliver_carries_the_idempotency_key(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    server.handler = answer(b'{"resourceType":"Bundle","type":"message"}')
    outcome = await adapter.deliver(member, message(), idempotency_key="msg-42")
    assert outcome.status is DeliveryStatus.DELIVERED and outcome.http_status == 200
    assert outcome.answer == {"resourceType": "Bundle", "type": "message"}
    hit = server.hits[0]
    assert (hit.method, hit.path) == ("POST", "/fhir/$process-message")
    assert hit.headers["idempotency-key"] == "msg-42"
    assert hit.headers["content-type"] == "application/fhir+json"
    assert orjson.loads(hit.body)["id"] == "msg-42"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, DeliveryStatus.REJECTED),
        (422, DeliveryStatus.REJECTED),
        (429, DeliveryStatus.RETRY_LATER),
        (502, DeliveryStatus.RETRY_LATER),
    ],
)
async def test_delivery_outcomes_follow_the_receivers_answer(
    adapter: MemberAdapter, scripted: Scripted, status: int, expected: DeliveryStatus
) -> None:
    server, member = scripted
    server.handler = answer(b'{"resourceType":"OperationOutcome","issue":[]}', status=status)
    outcome = await adapter.deliver(member, message(), idempotency_key="msg-7")
    assert outcome.status is expected and outcome.http_status == status
    assert outcome.answer == {"resourceType": "OperationOutcome", "issue": []}


async def test_delivery_to_a_member_that_is_down_is_retried_later(adapter: MemberAdapter) -> None:
    down = Member("00000009", "Down", "Z3", f"http://127.0.0.1:{free_port()}/fhir", timeout=2.0)
    outcome = await adapter.deliver(down, message(), idempotency_key="msg-8")
    assert outcome.status is DeliveryStatus.RETRY_LATER and outcome.http_status is None


async def test_capabilities_are_read_from_metadata(adapter: MemberAdapter, scripted: Scripted) -> None:
    server, member = scripted
    statement = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": [{"type": "Observation", "searchParam": [{"name": "patient"}, {"name": "code"}]}],
                "operation": [{"name": "process-message"}],
            }
        ],
    }
    server.handler = answer(orjson.dumps(statement))
    found = await adapter.capabilities(member)
    assert found.available and found.fhir_version == "4.0.1"
    assert found.resource_types == {"Observation": frozenset({"patient", "code"})}
    assert found.operations == frozenset({"process-message"})
    await adapter.capabilities(member)
    assert len(server.hits) == 1  # cached


# --- any JSON shape: reported, never raised --------------------------------------------------------------

GENERIC_WARNING = "the member reported an issue with its answer"


def with_entries(*extra: Any, **bundle: Any) -> bytes:
    """A searchset with the patient's `o1` and `extra` entries; `bundle` replaces top-level elements."""
    body = orjson.loads(searchset(obs("o1")))
    body["entry"] += list(extra)
    return orjson.dumps({**body, **bundle})


def outcome_entry(resource: Any, search: Any = None) -> dict[str, Any]:
    return {"resource": resource, "search": {"mode": "outcome"} if search is None else search}


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        (outcome_entry({"resourceType": "OperationOutcome", "issue": 5}), GENERIC_WARNING),
        (
            outcome_entry({"resourceType": "OperationOutcome", "issue": [{"details": "text"}]}),
            GENERIC_WARNING,
        ),
        (outcome_entry({"resourceType": "OperationOutcome", "issue": "index rebuilding"}), GENERIC_WARNING),
        (outcome_entry({"resourceType": "OperationOutcome", "issue": {"diagnostics": "x"}}), GENERIC_WARNING),
        (
            outcome_entry(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [5, None, {"diagnostics": 7, "details": {"text": "slow"}}],
                }
            ),
            "slow",
        ),
        (
            outcome_entry({"resourceType": "OperationOutcome", "issue": [{"diagnostics": ["a"]}]}),
            GENERIC_WARNING,
        ),
        (outcome_entry(None), GENERIC_WARNING),
        (outcome_entry(["OperationOutcome"]), GENERIC_WARNING),
        (outcome_entry({"resourceType": "OperationOutcome"}, search="outcome"), GENERIC_WARNING),
    ],
    ids=[
        "issue-int",
        "details-text",
        "issue-str",
        "issue-object",
        "mixed",
        "diagnostics-list",
        "null",
        "list",
        "search-str",
    ],
)
async def test_a_member_outcome_of_any_shape_is_its_warning(
    adapter: MemberAdapter, scripted: Scripted, entry: dict[str, Any], text: str
) -> None:
    server, member = scripted
    server.handler = answer(with_entries(entry))
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert not outcome.failed and not outcome.partial
    assert [(p.code, p.detail) for p in outcome.problems] == [(ProblemCode.MEMBER_WARNING, text)]


@pytest.mark.parametrize(
    ("body", "partial"),
    [
        (with_entries(link=5), True),
        (with_entries(link="next"), True),
        (with_entries(link=[{"relation": "next", "url": 5}]), True),
        (with_entries(link=[5, "x", None, {"relation": ["next"]}]), False),
        (with_entries(total="many"), False),
        (with_entries(total=True), False),
        (with_entries(total=-1), False),
        (
            with_entries(5, None, "x", [], {"resource": 5}, {"search": 5}, {"resource": {"resourceType": 5}}),
            False,
        ),
        (with_entries({"resource": obs("o2", meta=5)}, {"resource": obs("o3", subject="Patient/p1")}), False),
    ],
    ids=[
        "link-int",
        "link-str",
        "next-url-int",
        "odd-links",
        "total-str",
        "total-bool",
        "total-negative",
        "odd-entries",
        "odd-resources",
    ],
)
async def test_odd_shapes_in_a_searchset_are_dropped_and_reported(
    adapter: MemberAdapter, scripted: Scripted, body: bytes, partial: bool
) -> None:
    server, member = scripted
    server.handler = answer(body)
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert "o1" in [r["id"] for r in outcome.resources]
    assert not outcome.failed and outcome.partial is partial
    assert len(server.hits) == 1


@pytest.mark.parametrize(
    ("over", "url"),
    [("aiohttp", "http://[::1"), ("httpx", "http://[::1"), ("httpx", "{base}/Observation?page=\u0000")],
    ids=["bad-host", "bad-host-httpx", "nul-httpx"],  # aiohttp follows a NUL (yarl quotes it)
)
async def test_a_next_link_that_cannot_be_sent_ends_the_search_as_partial(
    context: AdapterContext, scripted: Scripted, over: str, url: str
) -> None:
    server, member = scripted
    http = build_http_client(httpx.AsyncHTTPTransport() if over == "httpx" else None)
    registry = AdapterRegistry(dataclasses.replace(context, http=http))
    try:
        server.handler = answer(searchset(obs("o1"), next_url=url.format(base=member.base_url)))
        outcome = await registry.get("fhir-rest").search(member, SearchQuery("Observation", PATIENT))
    finally:
        await registry.aclose()
        await http.aclose()
    assert [r["id"] for r in outcome.resources] == ["o1"]
    assert outcome.partial and not outcome.failed and codes(outcome) == [ProblemCode.INVALID_ANSWER]


@pytest.mark.parametrize(
    "statement",
    [
        {"rest": 5, "messaging": 5},
        {"rest": [{"resource": 5, "operation": "x"}], "messaging": "x"},
        {
            "rest": [
                {
                    "resource": [{"type": "Observation", "searchParam": [{"name": ["x"]}, 5]}],
                    "mode": ["server"],
                }
            ]
        },
        {"rest": [{"resource": [{"type": "Observation", "searchParam": {"name": "x"}, "operation": [5]}]}]},
    ],
)
async def test_capabilities_of_any_shape_are_read_as_far_as_they_go(
    adapter: MemberAdapter, scripted: Scripted, statement: dict[str, Any]
) -> None:
    server, member = scripted
    server.handler = answer(orjson.dumps({"resourceType": "CapabilityStatement", **statement}))
    found = await adapter.capabilities(member)
    assert found.available
    assert found.resource_types in ({}, {"Observation": frozenset()})


FHIR_KEYS = (
    "resourceType", "type", "id", "entry", "resource", "search", "mode", "link", "relation", "url", "total",
    "issue", "diagnostics", "details", "text", "meta", "security", "subject", "reference", "code", "status",
)  # fmt: skip
FHIR_WORDS = (
    "Bundle", "searchset", "Observation", "OperationOutcome", "Patient", "outcome", "match", "include",
    "next", "o1", "o2", "final", "Patient/p1", "Patient/p2", "@base@/Observation?page=2", "@base@/\u0000",
    "http://[::1",
)  # fmt: skip
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(FHIR_WORDS),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)
#: OperationOutcome entries, as a member may garble them.
member_outcomes = st.builds(
    lambda issue, search: {
        "resource": {"resourceType": "OperationOutcome", "issue": issue},
        "search": search,
    },
    json_values | st.lists(st.dictionaries(st.sampled_from(["diagnostics", "details"]), json_values)),
    st.just({"mode": "outcome"}) | json_values,
)
#: Searchsets with random entries, links and totals beside the patient's own Observation; and any JSON.
member_answers = st.one_of(
    st.fixed_dictionaries(
        {"resourceType": st.just("Bundle"), "type": st.just("searchset")},
        optional={
            "entry": st.lists(st.just({"resource": obs("o1")}) | member_outcomes | json_values, max_size=5)
            | json_values,
            "link": st.lists(json_values, max_size=3) | json_values,
            "total": json_values,
        },
    ),
    json_values,
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=member_answers)
async def test_any_json_from_a_member_is_reported_never_raised(
    adapter: MemberAdapter, scripted: Scripted, body: Any
) -> None:
    """Whatever JSON a member answers a search with, the adapter returns an outcome (it never raises),
    and what it keeps has passed the entry checks."""
    server, member = scripted
    adapter.context.breakers._breakers.clear()  # type: ignore[attr-defined]
    server.handler = answer(orjson.dumps(body).replace(b"@base@", member.base_url.encode()))
    query = SearchQuery("Observation", PATIENT)
    outcome = await adapter.search(member, query)
    checker = EntryChecker(query)
    assert all(checker.check(resource) is None for resource in outcome.resources)
    assert not (outcome.failed and outcome.resources)
    assert all(isinstance(p.detail, str) for p in outcome.problems)


RESPONSE_CODES = st.sampled_from(["ok", "transient-error", "fatal-error"])
#: A receiver's words with a right-to-left override, a zero-width space and a full-width digit nine.
UNSEEN = "ok \u202edeliv\u200bered\u202c \uff19"
#: A receiver's answers to a message: response messages with any response and outcome, and any JSON.
receiver_answers = st.one_of(
    st.builds(
        lambda response, outcome: {
            "resourceType": "Bundle",
            "type": "message",
            "entry": [
                {"resource": {"resourceType": "MessageHeader", "response": response}},
                {"resource": {"resourceType": "OperationOutcome", "issue": outcome}},
            ],
        },
        st.fixed_dictionaries({"code": RESPONSE_CODES | json_values}) | json_values,
        st.lists(
            st.dictionaries(st.sampled_from(["severity", "diagnostics", "details"]), json_values), max_size=3
        )
        | json_values,
    ),
    member_answers,
)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=receiver_answers, status=st.sampled_from([200, 202, 302, 400, 409, 422, 429, 500, 503]))
async def test_any_answer_to_a_message_is_an_outcome_never_raised(
    adapter: MemberAdapter, scripted: Scripted, body: Any, status: int
) -> None:
    """Whatever a receiver answers, the delivery has an outcome whose detail is one readable line: it is
    the sender's Task's text and part of the audit record."""
    server, member = scripted
    adapter.context.breakers._breakers.clear()  # type: ignore[attr-defined]
    server.handler = answer(orjson.dumps(body), status=status)
    outcome = await adapter.deliver(member, message(), idempotency_key="msg-any")
    assert outcome.http_status == status
    assert outcome.detail and outcome.detail.isprintable()
    assert outcome.reason is None or (outcome.reason.isprintable() and 0 < len(outcome.reason) <= 300)
    if 300 <= status < 400 or status in (429, 500, 503):
        assert outcome.status is DeliveryStatus.RETRY_LATER
    elif status >= 400:
        assert outcome.status is DeliveryStatus.REJECTED


@pytest.mark.parametrize(
    ("answer_body", "status", "expected", "detail"),
    [
        (
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "no ward"}]},
            422,
            DeliveryStatus.REJECTED,
            "the receiver refused the message (422): no ward",
        ),
        (
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {"severity": "warning", "diagnostics": "odd date"},
                    {"severity": "fatal", "details": {"coding": [{"display": "unknown sender"}]}},
                ],
            },
            400,
            DeliveryStatus.REJECTED,
            "the receiver refused the message (400): unknown sender",
        ),
        (
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "x" * 1000}]},
            503,
            DeliveryStatus.RETRY_LATER,
            f"the receiver answered 503: {'x' * 297}...",
        ),
        ({"resourceType": "OperationOutcome", "issue": []}, 409, DeliveryStatus.REJECTED, None),
        (  # a review: a right-to-left override made the text read otherwise than it was stored
            {"resourceType": "OperationOutcome", "issue": [{"diagnostics": UNSEEN}]},
            422,
            DeliveryStatus.REJECTED,
            "the receiver refused the message (422): ok deliv ered 9",
        ),
        (  # words that are all invisible are no reason, and do not hide a readable one
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {"severity": "error", "diagnostics": "\u200b\u202e"},
                    {"severity": "warning", "diagnostics": "unknown ward"},
                ],
            },
            400,
            DeliveryStatus.REJECTED,
            "the receiver refused the message (400): unknown ward",
        ),
        (
            {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "\u200b"}]},
            409,
            DeliveryStatus.REJECTED,
            None,
        ),
    ],
    ids=[
        "diagnostics",
        "most-severe-display",
        "shortened",
        "no-words",
        "unseen-characters",
        "invisible-then-readable",
        "invisible-only",
    ],
)
async def test_the_receivers_own_words_are_its_reason(
    adapter: MemberAdapter,
    scripted: Scripted,
    answer_body: dict[str, Any],
    status: int,
    expected: DeliveryStatus,
    detail: str | None,
) -> None:
    server, member = scripted
    server.handler = answer(orjson.dumps(answer_body), status=status)
    outcome = await adapter.deliver(member, message(), idempotency_key="msg-why")
    assert outcome.status is expected
    shown = f"{outcome.detail}: {outcome.reason}" if outcome.reason else outcome.detail
    assert shown == (detail or f"the receiver refused the message ({status})")


async def test_a_member_stored_at_a_metadata_address_is_not_called(adapter: MemberAdapter) -> None:
    """An endpoint registered before the rule, written as an IP the resolver never sees, is refused
    before the call (a review): the pull reports the member unreachable."""
    member = Member("00000009", "Oud", "Z3", "http://[::ffff:169.254.169.254]/fhir", timeout=2.0)
    outcome = await adapter.search(member, SearchQuery("Observation", PATIENT))
    assert outcome.failed and codes(outcome) == [ProblemCode.UNREACHABLE]
