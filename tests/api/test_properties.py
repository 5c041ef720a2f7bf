"""Property-based robustness of the FHIR API: whatever a client sends, the gateway answers without a 5xx,
every 4xx is an OperationOutcome, and nothing already stored is lost.

Random bodies (JSON values, resource-like dicts with and without resourceType, arbitrary bytes and text)
under random content types go to create and update; random search parameters (names, modifiers, prefixes,
unicode and control characters, very long values, many repetitions, commas, pipes, backslashes) go to
search. Hypothesis drives the async client through pytest-asyncio, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FHIR

HEADERS = {"Content-Type": FHIR, "Accept": FHIR}
TYPES = ("Patient", "Observation", "Organization", "Encounter", "Consent", "AuditEvent", "Bundle", "Binary")
ODD_TYPES = ("patient", "Nonexistent", "Resource", "DomainResource", "", "Patient ", "Pat%2Fient", "..")
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ----------------------------------------------------------------------------------------

#: NUL is left out of the random text until PostgreSQL's refusal of it is handled (a 500 today); the
#: known-bug tests at the end of this module pin that case down, so the properties keep finding new ones.
KNOWN_BAD_CHARACTERS = "\x00"
any_char = st.characters(codec="utf-8", exclude_characters=KNOWN_BAD_CHARACTERS)
nasty_text = st.one_of(
    st.text(alphabet=any_char, max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F, exclude_characters=KNOWN_BAD_CHARACTERS), max_size=40),
    st.text(alphabet="\x01\x1f\x7f\t\n\r\\|,$:.-_ \u00e9\u200b\ufeff\U0001f600", max_size=40),
    st.sampled_from(
        ["", " ", "null", "true", "0", "-1", "1e309", "NaN", "\\", "|", ",", "$", "'", '"', "%00"]
    ),
    st.integers(min_value=1, max_value=9_000).map(lambda n: "x" * n),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(nasty_text, inner, max_size=5),
    max_leaves=25,
)

FHIR_KEYS = (
    "id", "meta", "text", "extension", "contained", "identifier", "name", "birthDate", "gender", "status",
    "code", "subject", "effectiveDateTime", "valueQuantity", "telecom", "address", "active", "_birthDate",
    "implicitRules", "language", "modifierExtension", "link", "managingOrganization", "period",
)  # fmt: skip


def resource_like(res_type: str | None) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(FHIR_KEYS) | nasty_text
    base = st.dictionaries(keys, json_values, max_size=6)
    if res_type is None:
        return base
    kinds = st.sampled_from([res_type, *TYPES, *ODD_TYPES]) | nasty_text | json_scalars
    return st.tuples(base, kinds).map(lambda pair: {**pair[0], "resourceType": pair[1]})


def plausible(res_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """Nearly valid resources, mutated: these reach validation and the store, not just the JSON parser."""
    name = st.fixed_dictionaries(
        {}, optional={"family": nasty_text, "given": st.lists(nasty_text, max_size=3)}
    )
    return st.fixed_dictionaries(
        {"resourceType": st.just(res_type)},
        optional={
            "name": st.lists(name, max_size=2),
            "identifier": st.lists(
                st.fixed_dictionaries({"value": nasty_text}, optional={"system": nasty_text}), max_size=2
            ),
            "birthDate": nasty_text | st.dates().map(str),
            "gender": st.sampled_from(["male", "female", "other", "unknown"]) | nasty_text,
            "active": st.booleans() | json_scalars,
            "meta": st.fixed_dictionaries(
                {}, optional={"tag": st.lists(st.fixed_dictionaries({"code": nasty_text}))}
            ),
            "id": nasty_text,
        },
    )


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    json_values.map(encode),
    st.sampled_from(TYPES).flatmap(resource_like).map(encode),
    resource_like(None).map(encode),
    st.sampled_from(("Patient", "Organization")).flatmap(plausible).map(encode),
    st.binary(max_size=300),
    nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"{", b"[]", b"{}", b'{"resourceType":"Patient"', b"\xff\xfe", b'{"a":1}' * 3]),
)
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
content_types = (
    st.sampled_from(
        [
            FHIR,
            "application/json",
            "application/json+fhir",
            "application/fhir+json; charset=utf-8",
            "application/fhir+json; fhirVersion=4.0",
            "application/fhir+xml",
            "application/xml",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
            "*/*",
        ]
    )
    | header_text
)
path_types = st.sampled_from([*TYPES, *ODD_TYPES]) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
    min_size=1,
    max_size=20,
)
path_ids = st.sampled_from(["x", "1", "a" * 64, "a" * 65, "bad id", "..", "-", "Patient"]) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
    min_size=1,
    max_size=70,
)

PARAM_NAMES = (
    "_id", "_lastUpdated", "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
    "_tag", "_profile", "_security", "_source", "_has", "_text", "_content", "_list", "_query", "_format",
    "_pretty", "_page", "_since", "_type", "name", "family", "given", "identifier", "birthdate", "gender",
    "address", "telecom", "active", "organization", "general-practitioner", "code", "date", "value-quantity",
    "value-concept", "patient", "subject", "encounter", "status", "category", "combo-code", "component-code",
    "subject.name", "patient.identifier", "part-of", "url", "phonetic", "death-date",
)  # fmt: skip
MODIFIERS = (
    "", ":missing", ":exact", ":contains", ":not", ":text", ":above", ":below", ":in", ":not-in", ":of-type",
    ":identifier", ":Patient", ":Observation", ":iterate", ":type", "::", ":",
)  # fmt: skip
PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "EQ")
VALUE_SHAPES = st.sampled_from(
    [
        "2019", "2019-05", "2019-13-45", "2019-05-03T10:00:00+01:00", "2019-05-03T10:00Z", "9999-12",
        "5.4|http://unitsofmeasure.org|mmol/L", "5.4||mmol/L", "abc", "1e400", "-0", "1." + "0" * 400,
        "Patient/1", "Patient/", "http://x/fhir/Patient/1", "urn:uuid:1", "#x", "true", "false", "0000",
        "Patient:name",
        "Observation:patient", "Observation:patient:Patient", "*", "-date", "date,-_id", "count", "accurate",
        "a,b,c", "a\\,b", "a|b|c|d", "\\", "\\\\", "|", ",", ",,,,", "$", "http://loinc.org|", "|8867-4",
    ]
)  # fmt: skip
values = st.one_of(
    nasty_text,
    VALUE_SHAPES,
    st.tuples(st.sampled_from(PREFIXES), VALUE_SHAPES | nasty_text).map("".join),
    st.lists(VALUE_SHAPES | nasty_text, min_size=2, max_size=60).map(",".join),
)
names = st.one_of(
    st.tuples(st.sampled_from(PARAM_NAMES), st.sampled_from(MODIFIERS)).map("".join),
    st.tuples(st.sampled_from(PARAM_NAMES), st.just(":"), nasty_text).map("".join),
    nasty_text,
)
param_lists = st.one_of(
    st.lists(st.tuples(names, values), max_size=8),
    st.tuples(names, values, st.integers(min_value=2, max_value=120)).map(lambda t: [(t[0], t[1])] * t[2]),
).filter(lambda pairs: len(urlencode(pairs)) < 60_000)  # httpx refuses longer query strings

# --- checks ----------------------------------------------------------------------------------------------


def check_response(response: httpx.Response, what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what} -> {status}: {response.text[:500]}"
    if status < 400 or status in (304,):
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{what} -> {status} without a JSON body: {response.text[:200]!r}") from None
    assert body.get("resourceType") == "OperationOutcome", f"{what} -> {status}: {response.text[:300]}"
    assert body.get("issue"), body


async def make_sentinel(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """A resource stored before the run, with an identifier only this run knows."""
    marker = f"prop-{uuid.uuid4().hex}"
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:rzcp:test:properties", "value": marker}],
        "name": [{"family": "Sentinel", "given": ["Zoë"]}],
        "birthDate": "1960-01-01",
    }
    created = await client.post("/fhir/Patient", json=resource, headers=HEADERS)
    assert created.status_code == 201, created.text
    return created.json(), marker


async def assert_sentinel_intact(client: httpx.AsyncClient, sentinel: dict[str, Any], marker: str) -> None:
    read = await client.get(f"/fhir/Patient/{sentinel['id']}")
    assert read.status_code == 200, read.text
    assert read.json() == sentinel
    found = await client.get("/fhir/Patient", params={"identifier": f"urn:rzcp:test:properties|{marker}"})
    assert found.status_code == 200, found.text
    assert [e["resource"] for e in found.json().get("entry", [])] == [sentinel]


# --- the properties --------------------------------------------------------------------------------------


@pytest.fixture
def sentinel_holder() -> dict[str, Any]:
    return {}


@SETTINGS
@given(
    method=st.sampled_from(["POST", "PUT"]),
    res_type=path_types,
    res_id=path_ids,
    body=bodies,
    content_type=content_types,
    use_body_id=st.booleans(),
)
async def test_random_writes_never_fail_the_server(
    client: httpx.AsyncClient,
    sentinel_holder: dict[str, Any],
    method: str,
    res_type: str,
    res_id: str,
    body: bytes,
    content_type: str,
    use_body_id: bool,
) -> None:
    if not sentinel_holder:
        sentinel_holder["resource"], sentinel_holder["marker"] = await make_sentinel(client)
    if method == "PUT" and use_body_id:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and "id" in parsed and isinstance(parsed["id"], str):
                res_id = parsed["id"] or res_id
        except ValueError:
            pass
    if res_id == sentinel_holder["resource"]["id"]:
        res_id += "x"
    url = f"/fhir/{res_type}" if method == "POST" else f"/fhir/{res_type}/{quote(res_id, safe='')}"
    headers = {"Accept": FHIR}
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.request(method, url, content=body, headers=headers)
    check_response(response, f"{method} {url} [{content_type}] {body[:200]!r}")
    if response.status_code in (200, 201) and response.content:
        stored = response.json()
        assert stored["resourceType"] == res_type
        read = await client.get(f"/fhir/{res_type}/{stored['id']}")
        assert read.status_code == 200 and read.json() == stored
    await assert_sentinel_intact(client, sentinel_holder["resource"], sentinel_holder["marker"])


@SETTINGS
@given(
    res_type=st.sampled_from(["Patient", "Observation", "Encounter", "Organization"]) | path_types,
    params=param_lists,
    strict=st.booleans(),
)
async def test_random_searches_never_fail_the_server(
    client: httpx.AsyncClient,
    sentinel_holder: dict[str, Any],
    res_type: str,
    params: list[tuple[str, str]],
    strict: bool,
) -> None:
    if not sentinel_holder:
        sentinel_holder["resource"], sentinel_holder["marker"] = await make_sentinel(client)
    headers = {"Accept": FHIR, **({"Prefer": "handling=strict"} if strict else {})}
    response = await client.get(f"/fhir/{res_type}", params=params, headers=headers)
    check_response(response, f"GET /fhir/{res_type} {params!r:.300}")
    if response.status_code == 200:
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle", bundle
        assert bundle["type"] == "searchset", bundle
    await assert_sentinel_intact(client, sentinel_holder["resource"], sentinel_holder["marker"])


# --- edge values that once gave a 500 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/fhir/Patient", {"birthdate": "9999-12-31"}),
        ("/fhir/Patient", {"birthdate": "9999-12-31T23:59:59-01:00"}),
        ("/fhir/Patient", {"_lastUpdated": "gt0001-01-01T00:00:00+01:00"}),
        ("/fhir/Patient/_history", {"_since": "9999-12-31"}),
        ("/fhir/Patient", {"birthdate": "9999-12"}),
        ("/fhir/Patient", {"birthdate": "0001-01-01"}),
        ("/fhir/Patient", {"birthdate": "ap0001"}),
        ("/fhir/Patient", {"_count": "99999999999999999999"}),
        ("/fhir/Observation", {"value-quantity": "1e400"}),
        ("/fhir/Observation", {"value-quantity": "ap-1e308"}),
    ],
)
async def test_edge_values_are_not_server_errors(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params)
    check_response(response, f"GET {path} {params}")


NUL_SEARCHES = [
    ("Patient", {"name": "a\x00b"}),
    ("Patient", {"name:exact": "\x00"}),
    ("Patient", {"identifier": "a\x00|b"}),
    ("Patient", {"_id": "a\x00"}),
    ("Patient", {"_tag": "\x00"}),
    ("Patient", {"organization": "http://x/\x00"}),
    ("Observation", {"code:text": "\x00"}),
    ("ValueSet", {"url:below": "\x00"}),
]


@pytest.mark.parametrize(("res_type", "params"), NUL_SEARCHES)
async def test_nul_in_a_search_value_is_not_a_server_error(
    client: httpx.AsyncClient,
    database_url: str,
    request: pytest.FixtureRequest,
    res_type: str,
    params: dict[str, str],
) -> None:
    response = await client.get(f"/fhir/{res_type}", params=params)
    check_response(response, f"GET /fhir/{res_type} {params!r}")


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "name": [{"family": "a\x00b"}]},
        {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "a\x00"}]},
    ],
)
async def test_nul_in_a_resource_is_not_a_server_error(
    client: httpx.AsyncClient, database_url: str, request: pytest.FixtureRequest, resource: dict[str, Any]
) -> None:
    """FHIR strings may not hold characters below U+0020 but tab, CR and LF: a 4xx is right, a 500 is not."""
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=HEADERS)
    check_response(response, f"POST {resource!r}")
