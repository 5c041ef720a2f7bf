"""Search correctness against real-world data: the nl-core examples and two Synthea patients.

Everything is loaded through HTTP POST (references rewritten to the ids the server assigns), then each search
is compared with EXACTLY the set this module computes itself from the raw JSON it sent, in plain Python,
without calling the gateway's own search code. The store is emptied before loading, and every search is
scoped to data this module knows (a patient, an identifier, a code), so other modules' data cannot leak in.
"""

from __future__ import annotations

import copy
import glob
import random
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio

from rzcp.exchange.pull import _sorted
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.fhir.search.parser import parse_search
from rzcp.store.indexer import sort_value
from tests.conftest import FHIR, SHARED_DATA, load_json

HEADERS = {"Content-Type": FHIR, "Accept": FHIR}
#: Every loaded resource carries this tag, and every search here is scoped by it: other modules' data, in
#: the same database, never leaks into an expected set.
TAG_SYSTEM = "urn:rzcp:test:real-data"
TAG = f"load-{uuid.uuid4().hex[:12]}"
SCOPE = ("_tag", f"{TAG_SYSTEM}|{TAG}")
BASE = "http://gateway.test"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
#: The first resource types to POST (then whatever their references allow), as the brief asks.
FIRST_TYPES = ("Patient", "Organization", "Practitioner", "Location", "PractitionerRole", "Encounter")
#: Where each Synthea resource type keeps its patient (the `patient` search parameter's element).
PATIENT_ELEMENT = {
    "Observation": "subject",
    "Condition": "subject",
    "Encounter": "subject",
    "Procedure": "subject",
    "MedicationRequest": "subject",
    "DiagnosticReport": "subject",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "DocumentReference": "subject",
    "Immunization": "patient",
    "AllergyIntolerance": "patient",
}

# Two extra patients for what the real data lacks: accents and an identifier without a system.
EXTRA = [
    {
        "resourceType": "Patient",
        "identifier": [
            {"value": "RZCP-REAL-NOSYS"},
            {"system": "urn:rzcp:test:real", "value": "RZCP-REAL-SYS-1"},
        ],
        "name": [{"family": "Ångström-Müller", "given": ["Zoë"], "text": "Zoë Ångström-Müller"}],
        "gender": "female",
        "birthDate": "1984-02-29",
    },
    {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:rzcp:test:real", "value": "RZCP-REAL-NOSYS"}],
        "name": [{"family": "Angstrom", "given": ["Zoe"]}],
        "gender": "female",
        "birthDate": "1990",
    },
    {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:rzcp:test:real", "value": "a,b|c\\d$e"}],
        "name": [{"family": "Comma,Pipe|Back\\slash$Dollar", "given": ["Escaped"]}],
        "gender": "other",
        "birthDate": "2001-07-04",
    },
]


# --- loading ------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One loaded resource: the JSON as last sent (with the server's id), and where it came from."""

    key: str  # what the source data calls it: "urn:uuid:..." or "Type/original-id"
    source: str  # "nl-core", "synthea-355", "synthea-85" or "extra"
    body: dict[str, Any]
    last_updated: str = ""

    @property
    def type(self) -> str:
        return self.body["resourceType"]

    @property
    def ref(self) -> str:
        return f"{self.type}/{self.body['id']}"


@dataclass
class Loaded:
    items: list[Item]
    rejected: list[tuple[str, int, dict[str, Any]]]
    by_key: dict[str, Item] = field(default_factory=dict)

    def of(self, res_type: str, source: str | None = None) -> list[Item]:
        return [i for i in self.items if i.type == res_type and (source is None or i.source == source)]

    def refs(
        self, res_type: str, pred: Callable[[dict[str, Any]], bool], source: str | None = None
    ) -> set[str]:
        return {i.ref for i in self.of(res_type, source) if pred(i.body)}

    def patient(self, source: str) -> Item:
        (found,) = self.of("Patient", source)
        return found


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v, mapping))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [rewrite(v, mapping) for v in value]
    return value


def source_items() -> list[Item]:
    items = []
    for path in sorted(glob.glob(str(SHARED_DATA / "nl-core" / "*.json"))):
        body = load_json(Path(path))
        items.append(Item(f"{body['resourceType']}/{body.get('id')}", "nl-core", body))
    for path in sorted(glob.glob(str(SHARED_DATA / "synthea" / "*.json"))):
        bundle = load_json(Path(path))
        source = "synthea-" + re.sub(r"\D", "", path.rsplit("_", 1)[-1])
        items += [Item(e["fullUrl"], source, e["resource"]) for e in bundle["entry"]]
    items += [Item(f"extra/{n}", "extra", copy.deepcopy(body)) for n, body in enumerate(EXTRA)]
    return items


async def load(http: httpx.AsyncClient) -> Loaded:
    """POST every resource in dependency order (cycles broken, then fixed with one PUT each)."""
    pending = source_items()
    keys = {i.key for i in pending}
    mapping: dict[str, str] = {}  # source key -> "Type/new-id"
    done: list[Item] = []
    rejected: list[tuple[str, int, dict[str, Any]]] = []
    unresolved: list[Item] = []
    rank = {t: n for n, t in enumerate(FIRST_TYPES)}
    pending.sort(key=lambda i: rank.get(i.type, len(rank)))
    while pending:
        ready = [
            i for i in pending if all(r in mapping for r in references(i.body) if r in keys and r != i.key)
        ]
        if not ready:  # a reference cycle (Observation.hasMember <-> derivedFrom): break it
            ready = pending[:1]
        pending = [i for i in pending if i not in ready]
        for item in ready:
            body = rewrite(item.body, mapping)
            body.pop("id", None)
            meta = body.setdefault("meta", {})
            meta["tag"] = [*meta.get("tag", []), {"system": TAG_SYSTEM, "code": TAG}]
            response = await http.post(f"/fhir/{item.type}", json=body, headers=HEADERS)
            if response.status_code != 201:
                rejected.append((item.key, response.status_code, response.json()))
                keys.discard(item.key)
                continue
            created = response.json()
            body["id"] = created["id"]
            item.body, item.last_updated = body, created["meta"]["lastUpdated"]
            mapping[item.key] = item.ref
            done.append(item)
            if any(r in keys and r not in mapping for r in references(body)):
                unresolved.append(item)
    for item in unresolved:
        body = rewrite(item.body, mapping)
        response = await http.put(f"/fhir/{item.ref}", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        item.body, item.last_updated = body, response.json()["meta"]["lastUpdated"]
    return Loaded(done, rejected, {i.key: i for i in done})


_LOADED: dict[str, Loaded] = {}


@pytest_asyncio.fixture(loop_scope="session")
async def data(client: httpx.AsyncClient, database_url: str) -> Loaded:
    """The data, loaded once per database through the suite's own client (whatever auth it carries)."""
    if database_url not in _LOADED:
        _LOADED[database_url] = await load(client)
    return _LOADED[database_url]


# --- searching ----------------------------------------------------------------------------------------


def entry_ref(entry: dict[str, Any]) -> str:
    resource = entry["resource"]
    ref = f"{resource['resourceType']}/{resource['id']}"
    assert entry["fullUrl"] == f"{BASE}/fhir/{ref}"
    return ref


async def page(
    client: httpx.AsyncClient, res_type: str, params: Any, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.get(f"/fhir/{res_type}", params=scoped(params), headers=headers or {})
    assert response.status_code == 200, (res_type, params, response.text)
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def scoped(params: Any) -> list[tuple[str, str]]:
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    return [*pairs, SCOPE]


@dataclass
class Found:
    matches: list[str]  # in the server's order, over all pages
    included: set[str]
    pages: int


async def search(client: httpx.AsyncClient, res_type: str, params: Any) -> Found:
    """Every page of a search, following `next` links; no resource may come twice."""
    bundle = await page(client, res_type, params)
    matches: list[str] = []
    included: list[str] = []
    pages = 1
    while True:
        for entry in bundle.get("entry", []):
            mode = entry["search"]["mode"]
            assert mode in ("match", "include"), entry
            (matches if mode == "match" else included).append(entry_ref(entry))
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if next_url is None:
            break
        assert next_url.startswith(f"{BASE}/fhir/{res_type}?")
        response = await client.get(next_url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        pages += 1
        assert pages < 200, "paging does not end"
    duplicates = [r for r, n in Counter(matches).items() if n > 1]
    assert not duplicates, (res_type, params, duplicates)
    return Found(matches, set(included), pages)


async def assert_search(
    client: httpx.AsyncClient, res_type: str, params: Any, expected: Iterable[str]
) -> None:
    found = set((await search(client, res_type, params)).matches)
    expected = set(expected)
    assert found == expected, (
        f"{res_type}?{params}: {len(found - expected)} unexpected {sorted(found - expected)[:5]}, "
        f"{len(expected - found)} missing {sorted(expected - found)[:5]}"
    )


def esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


# --- the expectations, in plain Python ----------------------------------------------------------------


def norm(value: str) -> str:
    decomposed = unicodedata.normalize("NFD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def ref_of(body: dict[str, Any], element: str) -> list[str]:
    return [r["reference"] for r in listed(body.get(element)) if isinstance(r, dict) and "reference" in r]


def codings(concepts: Any) -> list[dict[str, Any]]:
    return [c for cc in listed(concepts) if isinstance(cc, dict) for c in listed(cc.get("coding"))]


def token_hit(
    coding_list: list[dict[str, Any]], system: str | None, code: str | None, no_system: bool
) -> bool:
    for c in coding_list:
        if no_system and "system" in c:
            continue
        if system is not None and c.get("system") != system:
            continue
        if code is not None and c.get("code") != code:
            continue
        return True
    return False


_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
NEVER_BEFORE, NEVER_AFTER = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)


def span(value: str) -> tuple[datetime, datetime]:
    """A FHIR date/dateTime/instant as the half-open UTC interval [start, end) its precision covers."""
    m = _DATE.fullmatch(value)
    assert m, value
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if month is None:
        return datetime(int(year), 1, 1), datetime(int(year) + 1, 1, 1)
    if day is None:
        start = datetime(int(year), int(month), 1)
        return start, (start + timedelta(days=32)).replace(day=1)
    if hour is None:
        start = datetime(int(year), int(month), int(day))
        return start, start + timedelta(days=1)
    start = datetime(int(year), int(month), int(day), int(hour), int(minute))
    width = timedelta(minutes=1)
    if second is not None:
        start += timedelta(seconds=int(second))
        width = timedelta(seconds=1)
    if fraction:
        start += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
        width = timedelta(microseconds=10 ** (6 - min(len(fraction), 6)))
    if zone and zone != "Z":
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        start = start - offset if zone[0] == "+" else start + offset
    return start, start + width


def period_span(period: dict[str, Any]) -> tuple[datetime, datetime]:
    start = span(period["start"])[0] if "start" in period else NEVER_BEFORE
    end = span(period["end"])[1] if "end" in period else NEVER_AFTER
    return start, end


def effective(body: dict[str, Any], element: str) -> tuple[datetime, datetime] | None:
    for suffix in ("DateTime", "Instant", "Date", ""):
        value = body.get(element + suffix)
        if isinstance(value, str):
            return span(value)
    period = body.get(element + "Period") or (
        body.get(element) if isinstance(body.get(element), dict) else None
    )
    return period_span(period) if isinstance(period, dict) else None


def date_hit(prefix: str, target: tuple[datetime, datetime] | None, value: str) -> bool:
    """R4 search.html#prefix for a date: the target's range against the search value's range."""
    if target is None:
        return False
    lo, hi = target
    s_lo, s_hi = span(value)
    inside = lo >= s_lo and hi <= s_hi
    return {
        "eq": inside,
        "ne": not inside,
        "gt": hi > s_hi,
        "lt": lo < s_lo,
        "ge": hi > s_hi or inside,
        "le": lo < s_lo or inside,
        "sa": lo >= s_hi,
        "eb": hi <= s_lo,
    }[prefix]


def quantity_hit(prefix: str, quantity: Any, number: str, system: str | None, code: str | None) -> bool:
    if not isinstance(quantity, dict) or "value" not in quantity:
        return False
    if code is not None:
        if system is not None and (quantity.get("system"), quantity.get("code")) != (system, code):
            return False
        if system is None and code not in (quantity.get("code"), quantity.get("unit")):
            return False
    x, v = Decimal(str(quantity["value"])), Decimal(number)
    half = Decimal(5).scaleb(v.as_tuple().exponent - 1)  # "5.4" is [5.35, 5.45)
    eq = v - half <= x < v + half
    return {"eq": eq, "ne": not eq, "gt": x > v, "lt": x < v, "ge": x >= v, "le": x <= v}[prefix]


def name_parts(body: dict[str, Any]) -> list[str]:
    parts = []
    for name in listed(body.get("name")):
        if isinstance(name, str):
            parts.append(name)
            continue
        for key in ("family", "given", "prefix", "suffix", "text"):
            parts += [p for p in listed(name.get(key)) if isinstance(p, str)]
    return parts


# --- the tests ----------------------------------------------------------------------------------------


async def test_everything_loaded(data: Loaded) -> None:
    counts = Counter(i.source for i in data.items)
    assert counts["nl-core"] == len(glob.glob(str(SHARED_DATA / "nl-core" / "*.json")))
    assert counts["extra"] == len(EXTRA)
    assert counts["synthea-355"] + counts["synthea-85"] == 473 + 267 - len(data.rejected)
    # The one Synthea resource that is invalid FHIR (a Period has no `stop`) is refused with a 422.
    assert [(status, outcome["issue"][0]["expression"]) for _, status, outcome in data.rejected] == [
        (422, ["Observation.effectivePeriod.stop"])
    ]


async def test_identifier(client: httpx.AsyncClient, data: Loaded) -> None:
    combos: dict[tuple[str, str | None, str], None] = {}
    per_type: Counter[str] = Counter()
    for item in data.items:
        for ident in listed(item.body.get("identifier")):
            if per_type[item.type] < 4 and "value" in ident:
                per_type[item.type] += 1
                combos[(item.type, ident.get("system"), ident["value"])] = None
    combos[("Patient", None, "RZCP-REAL-NOSYS")] = None
    assert len(combos) > 40

    def having(res_type: str, pred: Callable[[dict[str, Any]], bool]) -> set[str]:
        return data.refs(res_type, lambda b: any(pred(i) for i in listed(b.get("identifier"))))

    for res_type, system, value in combos:
        by_value = having(res_type, lambda i, v=value: i.get("value") == v)
        assert by_value
        await assert_search(client, res_type, {"identifier": esc(value)}, by_value)
        no_system = having(res_type, lambda i, v=value: i.get("value") == v and "system" not in i)
        await assert_search(client, res_type, {"identifier": "|" + esc(value)}, no_system)
        if system is not None:
            exact = having(res_type, lambda i, s=system, v=value: (i.get("system"), i.get("value")) == (s, v))
            await assert_search(client, res_type, {"identifier": f"{esc(system)}|{esc(value)}"}, exact)
    accented, plain, escaped = (i.ref for i in data.of("Patient", "extra"))
    await assert_search(client, "Patient", {"identifier": "urn:rzcp:test:real|a\\,b\\|c\\\\d\\$e"}, {escaped})
    await assert_search(client, "Patient", {"identifier": "RZCP-REAL-NOSYS"}, {accented, plain})
    await assert_search(client, "Patient", {"identifier": "|RZCP-REAL-NOSYS"}, {accented})
    await assert_search(client, "Patient", {"identifier": "urn:rzcp:test:real|"}, {accented, plain, escaped})


async def test_reference_by_patient(client: httpx.AsyncClient, data: Loaded) -> None:
    for source in ("synthea-355", "synthea-85"):
        patient = data.patient(source)
        pid = patient.body["id"]
        for res_type, element in PATIENT_ELEMENT.items():
            expected = data.refs(res_type, lambda b, e=element, p=patient.ref: p in ref_of(b, e))
            if res_type == "Observation":
                assert len(expected) > 50
            for params in ({"patient": patient.ref}, {"patient": pid}, {"patient:Patient": pid}):
                await assert_search(client, res_type, params, expected)
            if element == "subject":
                await assert_search(client, res_type, {"subject": patient.ref}, expected)
                await assert_search(client, res_type, {"subject:Patient": pid}, expected)
                await assert_search(client, res_type, {"subject:Group": pid}, set())
    nl_patient = data.by_key["Patient/nl-core-Patient-01"]
    for res_type in ("Observation", "Condition", "Procedure", "Encounter", "EpisodeOfCare", "Flag"):
        expected = data.refs(
            res_type, lambda b: nl_patient.ref in ref_of(b, "subject") + ref_of(b, "patient")
        )
        if res_type == "Observation":
            assert len(expected) > 50
        await assert_search(client, res_type, {"patient": nl_patient.ref}, expected)


async def test_reference_by_encounter(client: httpx.AsyncClient, data: Loaded) -> None:
    per_encounter = Counter(r for i in data.of("Observation") for r in ref_of(i.body, "encounter"))
    busiest = [ref for ref, _ in per_encounter.most_common(4)]
    assert per_encounter[busiest[0]] > 3
    for ref in busiest:
        expected = data.refs("Observation", lambda b, r=ref: r in ref_of(b, "encounter"))
        await assert_search(client, "Observation", {"encounter": ref}, expected)
        await assert_search(client, "Observation", {"encounter:Encounter": ref.split("/")[1]}, expected)
        patient = data.patient("synthea-355").ref
        both = data.refs(
            "Observation",
            lambda b, r=ref, p=patient: r in ref_of(b, "encounter") and p in ref_of(b, "subject"),
        )
        await assert_search(client, "Observation", [("encounter", ref), ("patient", patient)], both)
    await assert_search(
        client,
        "Observation",
        {"encounter": ",".join(busiest[:2])},
        data.refs("Observation", lambda b: bool(set(ref_of(b, "encounter")) & set(busiest[:2]))),
    )


PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb")


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_date_prefixes(client: httpx.AsyncClient, data: Loaded, prefix: str) -> None:
    for source in ("synthea-355", "synthea-85"):
        patient = data.patient(source).ref
        observations = data.of("Observation", source)
        sample = next(
            o.body["effectiveDateTime"]
            for o in sorted(observations, key=lambda o: o.body.get("effectiveDateTime", ""))
            if o.body.get("effectiveDateTime", "").startswith(("2019", "2020", "2021", "2022"))
        )
        utc = span(sample)[0].strftime("%Y-%m-%dT%H:%M:%SZ")
        values = ["2019", "2019-05", sample[:4], sample[:7], sample[:10], sample, utc, "1940-09-05"]
        for value in values:
            for res_type, element in (("Observation", "effective"), ("Encounter", "period")):
                expected = data.refs(
                    res_type,
                    lambda b, e=element, v=value, p=patient: (
                        p in ref_of(b, "subject") and date_hit(prefix, effective(b, e), v)
                    ),
                )
                await assert_search(client, res_type, {"patient": patient, "date": prefix + value}, expected)


async def test_date_range_and_or(client: httpx.AsyncClient, data: Loaded) -> None:
    patient = data.patient("synthea-85").ref

    def obs(pred: Callable[[tuple[datetime, datetime] | None], bool]) -> set[str]:
        return data.refs(
            "Observation", lambda b: patient in ref_of(b, "subject") and pred(effective(b, "effective"))
        )

    between = obs(lambda t: date_hit("ge", t, "1990") and date_hit("lt", t, "2010-06"))
    assert between
    await assert_search(
        client, "Observation", [("patient", patient), ("date", "ge1990"), ("date", "lt2010-06")], between
    )
    either = obs(lambda t: date_hit("eq", t, "1941") or date_hit("eq", t, "2017"))
    assert either
    await assert_search(client, "Observation", {"patient": patient, "date": "1941,eq2017"}, either)


async def test_codes(client: httpx.AsyncClient, data: Loaded) -> None:
    def obs(pred: Callable[[list[dict[str, Any]]], bool], patient: str | None = None) -> set[str]:
        return data.refs(
            "Observation",
            lambda b: (patient is None or patient in ref_of(b, "subject")) and pred(codings(b.get("code"))),
        )

    for code in ("8867-4", "72166-2", "85354-9", "8302-2", "9843-4", "39126-8"):
        with_system = obs(lambda c, k=code: token_hit(c, LOINC, k, False))
        assert with_system
        await assert_search(client, "Observation", {"code": f"{LOINC}|{code}"}, with_system)
        await assert_search(
            client, "Observation", {"code": code}, obs(lambda c, k=code: token_hit(c, None, k, False))
        )
        await assert_search(
            client, "Observation", {"code": f"|{code}"}, obs(lambda c, k=code: token_hit(c, None, k, True))
        )
        await assert_search(client, "Observation", {"code": f"http://snomed.info/sct|{code}"}, set())
    snomed = "http://snomed.info/sct"
    await assert_search(
        client,
        "Observation",
        {"code": "118871000146108"},
        obs(lambda c: token_hit(c, snomed, "118871000146108", False)),
    )
    both = obs(lambda c: token_hit(c, LOINC, "8867-4", False) or token_hit(c, snomed, "225552003", False))
    await assert_search(client, "Observation", {"code": f"{LOINC}|8867-4,{snomed}|225552003"}, both)
    patient = data.patient("synthea-355").ref
    any_loinc = obs(lambda c: token_hit(c, LOINC, None, False), patient)
    await assert_search(client, "Observation", {"patient": patient, "code": f"{LOINC}|"}, any_loinc)
    not_smoking = obs(lambda c: not token_hit(c, LOINC, "72166-2", False), patient)
    assert not_smoking and len(not_smoking) < len(any_loinc)
    await assert_search(
        client, "Observation", {"patient": patient, "code:not": f"{LOINC}|72166-2"}, not_smoking
    )
    vital = data.refs(
        "Observation",
        lambda b: (
            patient in ref_of(b, "subject")
            and token_hit(codings(b.get("category")), None, "vital-signs", False)
        ),
    )
    assert vital
    await assert_search(client, "Observation", {"patient": patient, "category": "vital-signs"}, vital)
    conditions = Counter(
        (c.get("system"), c.get("code")) for i in data.of("Condition") for c in codings(i.body.get("code"))
    )
    for (system, code), _ in conditions.most_common(3):
        expected = data.refs(
            "Condition", lambda b, s=system, k=code: token_hit(codings(b.get("code")), s, k, False)
        )
        await assert_search(client, "Condition", {"code": f"{system}|{code}"}, expected)


async def test_code_text(client: httpx.AsyncClient, data: Loaded) -> None:
    def texts(body: dict[str, Any]) -> list[str]:
        concept = body.get("code") or {}
        return [norm(t) for t in [concept.get("text"), *(c.get("display") for c in codings(concept))] if t]

    for words in ("heart rate", "Body Weight", "tobacco smoking"):
        wanted = norm(words)
        expected = data.refs(
            "Observation", lambda b, w=wanted: any(t.startswith(w) or f" {w}" in t for t in texts(b))
        )
        assert expected
        await assert_search(client, "Observation", {"code:text": words}, expected)


async def test_string_names(client: httpx.AsyncClient, data: Loaded) -> None:
    def named(
        res_type: str, pred: Callable[[str], bool], parts: Callable[[dict[str, Any]], list[str]] = name_parts
    ) -> set[str]:
        return data.refs(res_type, lambda b: any(pred(p) for p in parts(b)))

    for res_type in ("Patient", "Practitioner", "RelatedPerson"):
        for value in ("van", "Pietersen", "jan", "ritchie", "Pie", "de ", "dr", "zoe", "Zoë", "ÅNGSTRÖM"):
            expected = named(res_type, lambda p, v=norm(value): norm(p).startswith(v))
            await assert_search(client, res_type, {"name": value}, expected)
        for value in ("Pietersen", "pietersen", "Zoë", "Zoe", "Dr.", "van Putten-van der Giessen"):
            await assert_search(
                client, res_type, {"name:exact": value}, named(res_type, lambda p, v=value: p == v)
            )
        for value in ("ETER", "ngstr", "-van", "müller", "111"):
            expected = named(res_type, lambda p, v=norm(value): v in norm(p))
            await assert_search(client, res_type, {"name:contains": value}, expected)

    def families(b: dict[str, Any]) -> list[str]:
        return [n["family"] for n in listed(b.get("name")) if "family" in n]

    def givens(b: dict[str, Any]) -> list[str]:
        return [g for n in listed(b.get("name")) for g in listed(n.get("given"))]

    accented, plain, escaped = (i.ref for i in data.of("Patient", "extra"))
    await assert_search(client, "Patient", {"name:exact": "Comma\\,Pipe\\|Back\\\\slash\\$Dollar"}, {escaped})
    await assert_search(client, "Patient", {"family": "comma\\,pipe\\|back\\\\"}, {escaped})
    await assert_search(client, "Patient", {"family": "angstrom"}, {accented, plain})
    await assert_search(client, "Patient", {"given": "ZOË"}, {accented, plain})
    await assert_search(client, "Patient", {"given:exact": "Zoë"}, {accented})
    await assert_search(
        client, "Patient", {"family": "van"}, named("Patient", lambda p: norm(p).startswith("van"), families)
    )
    await assert_search(
        client, "Patient", {"given": "j"}, named("Patient", lambda p: norm(p).startswith("j"), givens)
    )
    for value in ("LOWELL", "holyoke medical", "Zorg"):
        expected = data.refs(
            "Organization",
            lambda b, v=norm(value): any(
                norm(n).startswith(v) for n in [b.get("name", ""), *listed(b.get("alias"))]
            ),
        )
        await assert_search(client, "Organization", {"name": value}, expected)


@pytest.mark.parametrize("prefix", ("eq", "ne", "gt", "lt", "ge", "le"))
async def test_quantity(client: httpx.AsyncClient, data: Loaded, prefix: str) -> None:
    observations = data.of("Observation")

    def expected(number: str, system: str | None, code: str | None) -> set[str]:
        return {
            o.ref
            for o in observations
            if quantity_hit(prefix, o.body.get("valueQuantity"), number, system, code)
        }

    for unit in ("mmol/L", "%", "cm", "/min"):
        values = sorted(
            str(o.body["valueQuantity"]["value"])
            for o in observations
            if o.body.get("valueQuantity", {}).get("code") == unit
        )
        assert values, unit
        for number in {values[len(values) // 2], values[0], "5.4", "100"}:
            await assert_search(
                client,
                "Observation",
                {"value-quantity": f"{prefix}{number}|{UCUM}|{unit}"},
                expected(number, UCUM, unit),
            )
            await assert_search(
                client,
                "Observation",
                {"value-quantity": f"{prefix}{number}||{unit}"},
                expected(number, None, unit),
            )
    for number in ("5.4", "38.6", "100"):
        await assert_search(
            client, "Observation", {"value-quantity": f"{prefix}{number}"}, expected(number, None, None)
        )


async def test_last_updated(client: httpx.AsyncClient, data: Loaded) -> None:
    observations = sorted(data.of("Observation"), key=lambda o: o.last_updated)
    low, high = (
        observations[len(observations) // 4].last_updated,
        observations[len(observations) // 2].last_updated,
    )

    def stamp(item: Item) -> tuple[datetime, datetime]:
        return span(item.last_updated)

    inside = {o.ref for o in observations if date_hit("ge", stamp(o), low) and date_hit("le", stamp(o), high)}
    assert len(inside) > 10
    await assert_search(
        client, "Observation", [("_lastUpdated", f"ge{low}"), ("_lastUpdated", f"le{high}")], inside
    )
    after = {o.ref for o in observations if date_hit("gt", stamp(o), high)}
    await assert_search(client, "Observation", {"_lastUpdated": f"gt{high}"}, after)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    await assert_search(client, "Observation", {"_lastUpdated": "lt2000-01-01"}, set())
    await assert_search(
        client,
        "Observation",
        {"_lastUpdated": f"le{today}T23:59:59Z", "code": "8867-4"},
        data.refs("Observation", lambda b: token_hit(codings(b.get("code")), None, "8867-4", False)),
    )


async def test_id_with_several_ids(client: httpx.AsyncClient, data: Loaded) -> None:
    observations = data.of("Observation", "synthea-85")
    chosen = [o.body["id"] for o in observations[:5]]
    expected = {f"Observation/{i}" for i in chosen}
    await assert_search(client, "Observation", {"_id": ",".join([*chosen, "no-such-id"])}, expected)
    await assert_search(
        client, "Observation", [("_id", ",".join(chosen)), ("_id", chosen[0])], {f"Observation/{chosen[0]}"}
    )
    patient = data.patient("synthea-85").ref
    rest = {o.ref for o in observations if patient in ref_of(o.body, "subject")} - expected
    await assert_search(client, "Observation", {"patient": patient, "_id:not": ",".join(chosen)}, rest)
    await assert_search(client, "Patient", {"_id": chosen[0]}, set())


async def test_sort(client: httpx.AsyncClient, data: Loaded) -> None:
    patient = data.patient("synthea-355").ref
    mine = {o.ref: o.body for o in data.of("Observation") if patient in ref_of(o.body, "subject")}
    for sort, descending in (("date", False), ("-date", True)):
        found = await search(client, "Observation", {"patient": patient, "_sort": sort, "_count": "500"})
        assert set(found.matches) == set(mine)
        keys = [effective(mine[r], "effective") for r in found.matches]
        dated = [k for k in keys if k is not None]
        assert keys[: len(dated)] == dated, "resources without a date come last"
        edges = [hi for _, hi in dated] if descending else [lo for lo, _ in dated]
        assert edges == sorted(edges, reverse=descending), sort
    by_item = {i.ref: i for i in data.of("Observation")}
    for sort in ("_lastUpdated", "-_lastUpdated"):
        found = await search(client, "Observation", {"patient": patient, "_sort": sort, "_count": "500"})
        stamps = [by_item[r].last_updated for r in found.matches]
        assert stamps == sorted(stamps, reverse=sort.startswith("-"))
    found = await search(client, "Practitioner", {"_sort": "family", "_count": "500"})
    assert set(found.matches) == {i.ref for i in data.of("Practitioner")}
    practitioners = {i.ref: i.body for i in data.of("Practitioner")}
    keys = [
        min(re.sub(r"[^a-z0-9]", "", norm(n.get("family", ""))) for n in practitioners[r]["name"])
        for r in found.matches
    ]
    assert keys == sorted(keys)


@pytest.mark.parametrize("sort", ["date", "-date", "code", "-code", "value-quantity", "-value-quantity"])
async def test_a_pull_sorts_a_merged_answer_as_the_store_sorts(
    client: httpx.AsyncClient, data: Loaded, sort: str
) -> None:
    """The exchange sorts what several members sent (`rzcp.exchange.pull._sorted`) from the same index
    rows as the store: the same resources in any order come out with the store's sequence of sort
    values (a key computed otherwise, say a date's low end where the store takes its high end, gives
    another sequence). Ties may differ: the store breaks them by insertion, the exchange by full URL."""
    patient = data.patient("synthea-355").ref
    found = await search(client, "Observation", {"patient": patient, "_sort": sort, "_count": "500"})
    bodies = {i.ref: i.body for i in data.of("Observation")}
    in_store_order = [(ref, bodies[ref]) for ref in found.matches]
    keys = parse_search(
        "Observation", [("_sort", sort)], SearchRegistry.default(), strict=True, default_count=1, max_count=1
    ).sort
    key = keys[0]
    values = lambda pairs: [sort_value(b, key.param, descending=key.descending) for _, b in pairs]  # noqa: E731
    for seed in (7, 8):
        shuffled = random.Random(seed).sample(in_store_order, len(in_store_order))
        assert values(_sorted(shuffled, keys)) == values(in_store_order)


@pytest.mark.parametrize("sort", (None, "date", "-date", "_lastUpdated"))
async def test_paging_walks_every_page(client: httpx.AsyncClient, data: Loaded, sort: str | None) -> None:
    patient = data.patient("synthea-355").ref
    expected = data.refs("Observation", lambda b: patient in ref_of(b, "subject"))
    params = {"patient": patient, "_count": "7", **({"_sort": sort} if sort else {})}
    found = await search(client, "Observation", params)  # asserts no duplicates
    assert set(found.matches) == expected
    assert found.pages == -(-len(expected) // 7)
    first = await page(client, "Observation", params)
    assert len(first["entry"]) == 7


async def test_summary_count(client: httpx.AsyncClient, data: Loaded) -> None:
    for source in ("synthea-355", "synthea-85"):
        patient = data.patient(source).ref
        expected = data.refs("Observation", lambda b, p=patient: p in ref_of(b, "subject"))
        bundle = await page(client, "Observation", {"patient": patient, "_summary": "count"})
        assert bundle["total"] == len(expected)
        assert "entry" not in bundle
        totalled = await page(
            client, "Observation", {"patient": patient, "_total": "accurate", "_count": "3"}
        )
        assert totalled["total"] == len(expected)
        assert len(totalled["entry"]) == 3


async def test_elements(client: httpx.AsyncClient, data: Loaded) -> None:
    patient = data.patient("synthea-85").ref
    expected = data.refs("Observation", lambda b: patient in ref_of(b, "subject"))
    bundle = await page(
        client, "Observation", {"patient": patient, "_elements": "status,code", "_count": "500"}
    )
    assert {entry_ref(e) for e in bundle["entry"]} == expected
    sent = {i.ref: i.body for i in data.of("Observation")}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert set(resource) <= {"resourceType", "id", "meta", "status", "code"}
        original = sent[entry_ref(entry)]
        assert resource["code"] == original["code"] and resource["status"] == original["status"]
        assert any(t.get("code") == "SUBSETTED" for t in resource["meta"].get("tag", []))


async def test_include(client: httpx.AsyncClient, data: Loaded) -> None:
    for source in ("synthea-355", "synthea-85"):
        patient = data.patient(source).ref
        expected = data.refs("Observation", lambda b, p=patient: p in ref_of(b, "subject"))
        found = await search(
            client, "Observation", {"patient": patient, "_include": "Observation:patient", "_count": "500"}
        )
        assert set(found.matches) == expected
        assert found.included == {patient}
        found = await search(
            client, "Observation", {"patient": patient, "_include": "Observation:encounter", "_count": "500"}
        )
        referenced = {
            r for o in data.of("Observation") if o.ref in expected for r in ref_of(o.body, "encounter")
        }
        assert found.included == referenced
        found = await search(
            client,
            "Encounter",
            {"patient": patient, "_include": "Encounter:participant:Practitioner", "_count": "500"},
        )
        encounters = [e.body for e in data.of("Encounter", source)]
        assert found.included == {
            p["individual"]["reference"]
            for e in encounters
            for p in listed(e.get("participant"))
            if p.get("individual", {}).get("reference", "").startswith("Practitioner/")
        }
    page_one = await page(
        client,
        "Observation",
        {"patient": data.patient("synthea-85").ref, "_include": "Observation:encounter", "_count": "5"},
    )
    matched = [e for e in page_one["entry"] if e["search"]["mode"] == "match"]
    sent = {i.ref: i.body for i in data.of("Observation")}
    assert {
        e["resource"]["resourceType"] + "/" + e["resource"]["id"]
        for e in page_one["entry"]
        if e["search"]["mode"] == "include"
    } == {r for e in matched for r in ref_of(sent[entry_ref(e)], "encounter")}


async def test_revinclude(client: httpx.AsyncClient, data: Loaded) -> None:
    for source in ("synthea-355", "synthea-85"):
        patient = data.patient(source)
        found = await search(
            client, "Patient", {"_id": patient.body["id"], "_revinclude": "Observation:patient"}
        )
        assert found.matches == [patient.ref]
        assert found.included == data.refs("Observation", lambda b, p=patient.ref: p in ref_of(b, "subject"))
        found = await search(
            client,
            "Patient",
            [
                ("_id", patient.body["id"]),
                ("_revinclude", "Encounter:subject"),
                ("_revinclude", "Immunization:patient"),
            ],
        )
        assert found.included == data.refs(
            "Encounter", lambda b, p=patient.ref: p in ref_of(b, "subject")
        ) | data.refs("Immunization", lambda b, p=patient.ref: p in ref_of(b, "patient"))
    nl_patient = data.by_key["Patient/nl-core-Patient-01"]
    found = await search(
        client, "Patient", {"_id": nl_patient.body["id"], "_revinclude": "Observation:subject"}
    )
    assert found.included == data.refs("Observation", lambda b: nl_patient.ref in ref_of(b, "subject"))


async def test_missing(client: httpx.AsyncClient, data: Loaded) -> None:
    cases: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        ("value-quantity", lambda b: "value" in b.get("valueQuantity", {}) or "valueSampledData" in b),
        ("value-concept", lambda b: bool(codings(b.get("valueCodeableConcept")))),
        ("encounter", lambda b: bool(ref_of(b, "encounter"))),
        ("date", lambda b: effective(b, "effective") is not None),
    ]
    for source in ("synthea-355", "synthea-85", "nl-core"):
        patient = (
            data.patient(source).ref if source != "nl-core" else data.by_key["Patient/nl-core-Patient-01"].ref
        )
        mine = [o.body for o in data.of("Observation", source) if patient in ref_of(o.body, "subject")]
        for name, present in cases:
            has = {f"Observation/{b['id']}" for b in mine if present(b)}
            lacks = {f"Observation/{b['id']}" for b in mine if not present(b)}
            await assert_search(client, "Observation", {"patient": patient, f"{name}:missing": "false"}, has)
            await assert_search(client, "Observation", {"patient": patient, f"{name}:missing": "true"}, lacks)


async def test_strict_and_lenient_handling(client: httpx.AsyncClient, data: Loaded) -> None:
    patient = data.patient("synthea-85").ref
    params = {"patient": patient, "frobnicate": "1", "_count": "500"}
    strict = await client.get(
        "/fhir/Observation", params=scoped(params), headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    outcome = strict.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "frobnicate" in str(outcome["issue"])
    for prefer in ({"Prefer": "handling=lenient"}, {}):
        bundle = await page(client, "Observation", params, prefer)
        outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        assert len(outcomes) == 1
        assert outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
        assert "frobnicate" in str(outcomes[0]["resource"]["issue"])
        matches = {entry_ref(e) for e in bundle["entry"] if e["search"]["mode"] == "match"}
        assert matches == data.refs("Observation", lambda b: patient in ref_of(b, "subject"))
    for unknown in ({"code:sounds-like": "x"}, {"subject.name": "x"}):
        response = await client.get(
            "/fhir/Observation",
            params=scoped({"patient": patient, **unknown}),
            headers={"Prefer": "handling=strict"},
        )
        assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "params",
    [
        {"date": "2019-13-45"},
        {"date": "2019-02-30"},
        {"date": "xx2019"},
        {"date": "yesterday"},
        {"_count": "abc"},
        {"_count": "-1"},
        {"value-quantity": "abc"},
        {"value-quantity": "gt5.4|http://unitsofmeasure.org"},
        {"value-quantity": "5.4|http://unitsofmeasure.org|"},
        {"_summary": "maybe"},
        {"code:missing": "perhaps"},
        {"_include": "Observation"},
        {"_lastUpdated": "2019-1"},
    ],
)
async def test_malformed_values_are_400(
    client: httpx.AsyncClient, data: Loaded, params: dict[str, str]
) -> None:
    response = await client.get(
        "/fhir/Observation", params=scoped({"patient": data.patient("synthea-85").ref, **params})
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] in ("error", "fatal")


async def test_post_search_form_equals_get(client: httpx.AsyncClient, data: Loaded) -> None:
    patient = data.patient("synthea-355").ref
    queries: list[list[tuple[str, str]]] = [
        [("patient", patient), ("code", f"{LOINC}|72166-2")],
        [("patient", patient), ("date", "ge2018"), ("date", "lt2023"), ("_sort", "-date")],
        [("name", "van"), ("_count", "2")],
        [("patient", patient), ("_count", "5"), ("_include", "Observation:encounter")],
    ]
    for query in queries:
        res_type = "Patient" if query[0][0] == "name" else "Observation"
        got = await page(client, res_type, query)
        posted = await client.post(
            f"/fhir/{res_type}/_search",
            content=urlencode(scoped(query)),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": FHIR},
        )
        assert posted.status_code == 200, posted.text
        assert [(e["fullUrl"], e["search"]["mode"]) for e in posted.json().get("entry", [])] == [
            (e["fullUrl"], e["search"]["mode"]) for e in got.get("entry", [])
        ]
        assert bool(posted.json().get("link", [{}])[-1]["relation"] == "next") == bool(
            got["link"][-1]["relation"] == "next"
        )


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_birthdate_and_gender(client: httpx.AsyncClient, data: Loaded, prefix: str) -> None:
    patients = data.of("Patient")
    for value in ("1990", "1984-02", "1984-02-29", "1940", "1970-01-01", "2001-07-04T12:00:00+02:00"):
        expected = {p.ref for p in patients if date_hit(prefix, effective(p.body, "birthDate"), value)}
        await assert_search(client, "Patient", {"birthdate": prefix + value}, expected)
    for gender in ("female", "male", "other"):
        expected = {p.ref for p in patients if p.body.get("gender") == gender}
        await assert_search(client, "Patient", {"gender": gender}, expected)
        await assert_search(client, "Patient", {"gender:not": gender}, {p.ref for p in patients} - expected)


async def test_references_fixed_by_an_update(client: httpx.AsyncClient, data: Loaded) -> None:
    """The Observations of a hasMember/derivedFrom cycle were created first and then updated: the index
    must hold their references as updated."""
    linked = [o for o in data.of("Observation") if "hasMember" in o.body or "derivedFrom" in o.body]
    assert linked
    for element, param in (("hasMember", "has-member"), ("derivedFrom", "derived-from")):
        for target in {r for o in linked for r in ref_of(o.body, element)}:
            assert not target.startswith("urn:")
            expected = data.refs("Observation", lambda b, e=element, t=target: t in ref_of(b, e))
            await assert_search(client, "Observation", {param: target}, expected)
            await assert_search(client, "Observation", {param: "urn:uuid:" + target.split("/")[1]}, set())
