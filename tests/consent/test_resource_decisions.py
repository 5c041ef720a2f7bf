"""Per-resource decisions with a memo: always the engine's answer for the resource, decided once per key."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rzcp.consent import service
from rzcp.consent.cases import consent_from_compact, load_cases
from rzcp.consent.compiled import CompiledConsents, compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.model import Request
from rzcp.consent.policy import DEFAULT_POLICY_PATH, Policy
from rzcp.consent.service import ResourceDecisions, filter_resources, request_for_resource
from tests.consent.test_properties import EMERGENCY, MEMBERS, POLICY, START, periods

OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"{OBS_CAT}|laboratory"
VITAL = f"{OBS_CAT}|vital-signs"
REPORT_LAB = "http://terminology.hl7.org/CodeSystem/v2-0074|LAB"
PROBLEM = "http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item"
HB = "http://loinc.org|718-7"
GLUCOSE = "http://loinc.org|2345-7"
SINUSITIS = "http://snomed.info/sct|444814009"
PSY = "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"
HIV = "http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV"
RESTRICTED = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"
NORMAL = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N"  # not a sensitive label
#: Tokens the policy's data categories ask for (Observation.category, DiagnosticReport.category).
CATEGORY_TOKENS = [LAB, VITAL, REPORT_LAB]
TOKENS = [*CATEGORY_TOKENS, PROBLEM, HB, GLUCOSE, SINUSITIS]
#: Codes no consent and no data category names: they must not split the memo, nor change a decision.
UNNAMED = ["http://snomed.info/sct|38341003", "http://loinc.org|8480-6"]
LABELS = [PSY, HIV, RESTRICTED, NORMAL]
TYPES = [
    "Condition", "Observation", "MedicationRequest", "DiagnosticReport", "AllergyIntolerance", "Encounter",
    "Specimen", "Patient",
]  # fmt: skip
DATE_ELEMENTS = ["onsetDateTime", "effectiveDateTime", "effectivePeriod", "authoredOn"]
DATA = ["medicatie", "labuitslagen", "problemen", "vitale-functies", "beeldvorming", "alle-gegevens"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: The normative cases (consents, policy and request as privacy officers wrote them), next to generated ones.
CASES = [
    case
    for case in load_cases(policy_data=yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8")))
    if case.consents
]


def _coding(token: str) -> dict[str, str]:
    system, _, code = token.rpartition("|")
    return {"system": system, "code": code}


# --- consents -------------------------------------------------------------------------------------------

#: Requesters, and the parties consents name: mostly these requesters, so that most consents take part.
REQUESTERS = ["00000201", "00000202", "00000101"]
parties = st.sampled_from([None, "ziekenhuizen-labs", "V6", "huisartsen", "ura:00000201", "ura:00000101"])
#: A provision's possible conditions, each with the odds (1 in n) that a provision has it: the ones about
#: the data (what the memo keys on) are the most frequent.
_CONDITIONS: tuple[tuple[str, st.SearchStrategy[Any], int], ...] = (
    ("from", parties, 6),
    ("purpose", st.lists(st.sampled_from(["TREAT", "COC"]), min_size=1, max_size=2, unique=True), 6),
    ("data", st.lists(st.sampled_from(DATA), min_size=1, max_size=2, unique=True), 4),
    ("types", st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True), 5),
    ("codes", st.lists(st.sampled_from(TOKENS), min_size=1, max_size=2, unique=True), 4),
    ("labels", st.lists(st.sampled_from(LABELS), min_size=1, max_size=2, unique=True), 5),
    ("data_period", periods.filter(bool), 4),
)


@st.composite
def provisions(draw: Any, depth: int, *, base: bool = False) -> dict[str, Any]:
    """A provision's conditions (the base one naming mostly the requesters), with nested exceptions down
    to `depth` levels."""
    out: dict[str, Any] = {}
    if base and (who := draw(parties)) is not None:
        out["to"] = who
    for key, strategy, odds in _CONDITIONS:
        if draw(st.integers(1, odds)) == 1:
            out[key] = draw(strategy)
    if depth > 0 and draw(st.integers(0, 2)) == 0:
        effect = draw(st.sampled_from(["permit", "deny"]))
        out["except"] = [{effect: draw(provisions(depth - 1))}]
    return out


@st.composite
def generated_consents(draw: Any) -> list[dict[str, Any]]:
    compact = [
        {"id": f"c{i}", draw(st.sampled_from(["permit", "permit", "deny"])): draw(provisions(2, base=True))}
        for i in range(draw(st.integers(1, 4)))
    ]
    return [consent_from_compact(c, POLICY) for c in compact]


# --- resources ------------------------------------------------------------------------------------------

_DATES = st.one_of(
    st.integers(-400, 3 * 365 + 400).map(lambda d: (START + timedelta(days=d)).date().isoformat()),
    st.integers(-400, 3 * 365 + 400).map(
        lambda d: (START + timedelta(days=d, hours=20)).isoformat() + "-05:00"
    ),
    st.sampled_from(["2024", "2025-03", "not a date", "2023-12-31T23:30:00-05:00"]),
)


def _dates(compiled: CompiledConsents) -> st.SearchStrategy[str]:
    """Clinical dates, half of them within a day of a bound of the consents' dataPeriods (where two
    resources are most likely to fall on different sides)."""
    bounds = sorted({b for period in compiled.data_periods for b in period if b.year not in (1, 9999)})
    if not bounds:
        return _DATES
    near = st.tuples(st.sampled_from(bounds), st.integers(-24, 24)).map(
        lambda t: (t[0] + timedelta(hours=t[1])).isoformat(timespec="seconds") + "Z"
    )
    return st.one_of(_DATES, near)


@st.composite
def resources(
    draw: Any, types: list[str], tokens: list[str], label_sets: list[list[str]], dates: st.SearchStrategy[str]
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": draw(st.sampled_from(types))}
    if draw(st.integers(0, 9)) == 0:
        del resource["resourceType"]  # decided as the asked type
    for element in draw(st.lists(st.sampled_from(["category", "code", "type"]), max_size=2, unique=True)):
        found = draw(st.lists(st.sampled_from(tokens), min_size=1, max_size=2, unique=True))
        concept = {"coding": [_coding(t) for t in found]}
        resource[element] = [concept] if element == "category" else concept
    labels = draw(st.sampled_from(label_sets))
    if labels:
        resource["meta"] = {"security": [_coding(label) for label in labels]}
    if draw(st.integers(0, 3)):
        resource = _dated(resource, draw(dates), draw(st.sampled_from(DATE_ELEMENTS)))
    return resource


def _dated(resource: dict[str, Any], date: str, where: str) -> dict[str, Any]:
    """The resource with `date` as its only clinical date."""
    out = {k: v for k, v in resource.items() if k not in DATE_ELEMENTS}
    out[where] = {"start": date} if where == "effectivePeriod" else date
    return out


@st.composite
def answers(draw: Any, compiled: CompiledConsents) -> list[dict[str, Any]]:
    """One source's answer: resources of one or two types, a few codes (often ones the consents name) and
    label sets, so that different resources often share a memo key, and some repeated (same key for
    sure), in any order."""
    types = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True))
    named = sorted(compiled.code_tokens) or TOKENS
    tokens = draw(st.lists(st.sampled_from(named), min_size=1, max_size=2, unique=True))
    tokens += draw(st.lists(st.sampled_from(CATEGORY_TOKENS), min_size=1, max_size=2, unique=True))
    tokens += draw(st.lists(st.sampled_from(TOKENS + UNNAMED), min_size=1, max_size=2, unique=True))
    label_set = st.sampled_from([[], [], [NORMAL], [PSY], [HIV, RESTRICTED]])
    label_sets = draw(st.lists(label_set, min_size=1, max_size=2))
    dates = _dates(compiled)
    kinds = resources(types, tokens, label_sets, dates)
    distinct = draw(st.lists(kinds, min_size=1, max_size=8))
    picks = draw(st.lists(st.integers(0, len(distinct) - 1), max_size=8))
    # the same resource at another date: a key that differs only by the date, if dates matter
    redated = draw(st.lists(st.tuples(st.sampled_from(distinct), dates, st.sampled_from(DATE_ELEMENTS))))
    return [*distinct, *(distinct[i] for i in picks), *(_dated(*r) for r in redated)]


@st.composite
def base_requests(draw: Any, purpose: str) -> Request:
    requester = draw(st.sampled_from(REQUESTERS))
    source = draw(st.sampled_from(sorted(MEMBERS)))
    moment = START + timedelta(days=draw(st.integers(0, 3 * 365)), hours=10)
    since = draw(st.sampled_from([None, timedelta(minutes=30), timedelta(hours=9)]))
    return Request(
        requester_ura=requester,
        requester_category=MEMBERS[requester],
        source_ura=source,
        source_category=MEMBERS[source],
        purpose=purpose,
        moment=moment,
        resource_type=draw(st.sampled_from(TYPES)),
        break_glass_since=moment - since if since is not None else None,
    )


Situation = tuple[list[dict[str, Any]], Policy, Request]


@st.composite
def generated_situations(draw: Any, purpose: str) -> Situation:
    policy = EMERGENCY if purpose == "ETREAT" else POLICY
    return draw(generated_consents()), policy, draw(base_requests(purpose))


@st.composite
def case_situations(draw: Any, purpose: str | None) -> Situation:
    """A normative case's consents and request (its own purpose and policy unless `purpose` is given)."""
    case = draw(st.sampled_from(CASES))
    if purpose is None:
        return case.consents, case.policy, case.request
    return case.consents, EMERGENCY, replace(case.request, purpose=purpose)


def _assert_same_as_engine(situation: Situation, data: st.DataObject) -> None:
    consents, policy, base = situation
    compiled = compile_consents(consents)
    decisions = ResourceDecisions(compiled, policy, base)
    for resource in data.draw(answers(compiled)):
        expected = decide(compiled, policy, request_for_resource(base, resource)).permitted
        assert decisions.permits(resource) == expected, resource


@SETTINGS
@given(situation=st.one_of(generated_situations("TREAT"), case_situations(None)), data=st.data())
def test_memoised_decisions_equal_the_engine(situation: Situation, data: st.DataObject) -> None:
    _assert_same_as_engine(situation, data)


@SETTINGS
@given(situation=st.one_of(generated_situations("ETREAT"), case_situations("ETREAT")), data=st.data())
def test_memoised_decisions_equal_the_engine_for_break_the_glass(
    situation: Situation, data: st.DataObject
) -> None:
    _assert_same_as_engine(situation, data)


# --- examples -------------------------------------------------------------------------------------------


def _base(purpose: str = "TREAT", resource_type: str = "Observation") -> Request:
    return Request(
        requester_ura="00000201",
        requester_category="ziekenhuizen-labs",
        source_ura="00000101",
        source_category="huisartsen",
        purpose=purpose,
        moment=datetime(2025, 6, 1, 10),
        resource_type=resource_type,
    )


def _compiled(*compact: dict[str, Any]) -> CompiledConsents:
    return compile_consents([consent_from_compact(c, POLICY) for c in compact])


def _condition(rid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid, "code": {"coding": [_coding(SINUSITIS)]}, **extra}


def test_a_data_period_is_decided_by_each_resource_date() -> None:
    compiled = _compiled(
        {"id": "c1", "permit": {"to": "ziekenhuizen-labs", "data_period": "2020-01-01 / 2020-12-31"}}
    )
    assert compiled.data_periods
    answer = [
        _condition("inside", onsetDateTime="2020-05-01"),
        _condition("before", onsetDateTime="2019-05-01"),
        _condition("inside-too", onsetDateTime="2020-06-01T08:00:00+02:00"),
        # 04:30 on 1 January 2021 in UTC: past the period's end although the local day is still 2020
        _condition("just-after", onsetDateTime="2020-12-31T23:30:00-05:00"),
        _condition("after", recordedDate="2021-02-01"),
        # without a date the engine assumes in favour of the permission: not the answer for "outside"
        _condition("undated"),
    ]
    decisions = ResourceDecisions(compiled, POLICY, _base(resource_type="Condition"))
    assert [decisions.permits(r) for r in answer] == [True, False, True, False, False, True]


def test_without_a_data_period_the_date_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = _compiled({"id": "c1", "permit": {"to": "ziekenhuizen-labs"}})
    assert not compiled.data_periods

    def unread(resource: Any) -> None:
        raise AssertionError("the clinical date was parsed")

    monkeypatch.setattr(service, "_clinical_date", unread)
    decisions = ResourceDecisions(compiled, POLICY, _base(resource_type="Condition"))
    assert decisions.permits(_condition("c", onsetDateTime="2020-05-01"))


def test_a_consent_naming_a_code_is_decided_by_that_code_in_category_or_code() -> None:
    compiled = _compiled({"id": "c1", "permit": {"to": "ziekenhuizen-labs", "codes": [HB]}})
    assert compiled.code_tokens == frozenset({HB})
    hb = {"resourceType": "Observation", "code": {"coding": [_coding(HB)]}}
    hb_as_category = {"resourceType": "Observation", "category": [{"coding": [_coding(HB)]}]}
    glucose = {"resourceType": "Observation", "code": {"coding": [_coding(GLUCOSE)]}}
    decisions = ResourceDecisions(compiled, POLICY, _base())
    assert [decisions.permits(r) for r in (hb, glucose, hb_as_category, glucose)] == [
        True,
        False,
        True,
        False,
    ]


def test_a_code_refused_in_a_nested_exception_is_withheld() -> None:
    compiled = _compiled(
        {
            "id": "c1",
            "permit": {
                "to": "ziekenhuizen-labs",
                "except": [{"deny": {"data": ["problemen"], "except": [{"permit": {"codes": [SINUSITIS]}}]}}],
            },
        },
        {"id": "c2", "deny": {"codes": [HB]}},
    )
    assert compiled.code_tokens == frozenset({SINUSITIS, HB})
    other = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
    }
    hb = {"resourceType": "Observation", "code": {"coding": [_coding(HB)]}}
    vital = {"resourceType": "Observation", "category": [{"coding": [_coding(VITAL)]}]}
    decisions = ResourceDecisions(compiled, POLICY, _base(resource_type="Condition"))
    assert [decisions.permits(r) for r in (_condition("s"), other, hb, vital)] == [True, False, False, True]


def test_sensitive_labels_and_the_emergency_rule_are_decided_per_resource() -> None:
    compiled = _compiled({"id": "c1", "deny": {"to": "huisartsen"}})  # concerns another requester
    lab = {"resourceType": "Observation", "category": [{"coding": [_coding(LAB)]}]}
    lab_psy = {**lab, "meta": {"security": [_coding(PSY)]}}
    vital = {"resourceType": "Observation", "category": [{"coding": [_coding(VITAL)]}]}
    decisions = ResourceDecisions(compiled, EMERGENCY, _base("ETREAT"))
    assert [decisions.permits(r) for r in (lab, lab_psy, vital, lab)] == [True, False, False, True]


def test_resources_of_one_kind_are_decided_once(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = _compiled({"id": "c1", "permit": {"to": "ziekenhuizen-labs", "data": ["problemen"]}})
    calls: list[Request] = []

    def counting(compiled: CompiledConsents, policy: Policy, request: Request) -> Any:
        calls.append(request)
        return decide(compiled, policy, request)

    monkeypatch.setattr(service, "decide", counting)
    conditions = [
        _condition(f"c{i}", code={"coding": [{"system": "http://snomed.info/sct", "code": str(i)}]})
        for i in range(13)
    ]
    kept = filter_resources(compiled, POLICY, _base(resource_type="Condition"), conditions)
    assert len(kept) == 13
    assert len(calls) == 1


@pytest.mark.parametrize(
    "malformed",
    [
        {"code": {"coding": _coding(PSY)}},  # one Coding where a list belongs
        {"category": [{"coding": ["not a Coding"]}]},
        {"category": ["not a CodeableConcept"]},
        {"meta": {"security": _coding(PSY)}},
        {"meta": "not an object"},
    ],
)
def test_a_resource_whose_codes_or_labels_cannot_be_read_is_withheld(malformed: dict[str, Any]) -> None:
    # The patient permits everything: still, an unreadable coding may be the one a refusal or a sensitive
    # label names, so it is never decided on a guess (and never fails the pull).
    compiled = _compiled({"id": "c1", "permit": {"to": "ziekenhuizen-labs"}})
    decisions = ResourceDecisions(compiled, POLICY, _base(resource_type="Condition"))
    assert decisions.permits(_condition("fine"))
    assert not decisions.permits({**_condition("broken"), **malformed})
    with pytest.raises(service.MalformedResource):
        request_for_resource(_base(resource_type="Condition"), {**_condition("broken"), **malformed})


ALLERGY_CAT = "http://hl7.org/fhir/allergy-intolerance-category"


def test_an_allergys_category_is_a_code_read_as_one() -> None:
    """AllergyIntolerance.category and .type are R4 `code`s (`["food"]`), not concepts: a new user's
    trial found every categorised allergy withheld from a pull, silently. A consent can name them."""
    food = {"resourceType": "AllergyIntolerance", "id": "f", "category": ["food"], "type": "allergy"}
    drug = {"resourceType": "AllergyIntolerance", "id": "d", "category": ["medication"]}
    everything = ResourceDecisions(
        _compiled({"id": "c1", "permit": {"to": "ziekenhuizen-labs", "data": ["allergieen"]}}),
        POLICY,
        _base(resource_type="AllergyIntolerance"),
    )
    assert [everything.permits(r) for r in (food, drug)] == [True, True]
    assert request_for_resource(_base(), food).codes == frozenset(
        {f"{ALLERGY_CAT}|food", "http://hl7.org/fhir/allergy-intolerance-type|allergy"}
    )
    no_drugs = ResourceDecisions(
        _compiled(
            {"id": "c1", "permit": {"to": "ziekenhuizen-labs"}},
            {"id": "c2", "deny": {"codes": [f"{ALLERGY_CAT}|medication"]}},
        ),
        POLICY,
        _base(resource_type="AllergyIntolerance"),
    )
    assert [no_drugs.permits(r) for r in (food, drug)] == [True, False]
    # a code where R4 has a concept stays unreadable, and so withheld; so does a category not a code
    assert not everything.permits({**_condition("x"), "code": "444814009"})
    assert not everything.permits({**food, "category": [True]})
    assert not everything.permits({**_condition("y"), "code": {"coding": [{"system": "s", "code": ["1"]}]}})


def test_a_coding_element_is_read_as_a_coding() -> None:
    """Encounter.class is a Coding, not a CodeableConcept: its code counts as the encounter's."""
    home = "http://terminology.hl7.org/CodeSystem/v3-ActCode|HH"
    visit = {"resourceType": "Encounter", "class": _coding(home)}
    assert request_for_resource(_base(), visit).codes == frozenset({home})
    refused = ResourceDecisions(
        _compiled(
            {"id": "c1", "permit": {"to": "ziekenhuizen-labs"}}, {"id": "c2", "deny": {"codes": [home]}}
        ),
        POLICY,
        _base(resource_type="Encounter"),
    )
    assert not refused.permits(visit)


def test_the_primitive_code_table_matches_r4() -> None:
    """`PRIMITIVE_CODES` lists, for every R4 type, the category/code/type/class elements that are not a
    CodeableConcept or Coding (nor a structure of the type's own): read from the R4 models themselves."""
    from fhir.resources.R4B import get_fhir_model_class

    from rzcp.fhir.search.definitions import SearchRegistry

    found: dict[str, set[str]] = {}
    for resource_type in SearchRegistry.default().resource_types():
        try:
            model = get_fhir_model_class(resource_type)
        except (KeyError, ValueError, AttributeError):
            continue  # R4 types R4B lacks
        for name, field in model.model_fields.items():
            element = field.alias or name
            # a structure's annotation names its model type (CodeableConceptType, CodingType, ...)
            if element in ("category", "code", "type", "class") and "Type" not in repr(field.annotation):
                found.setdefault(resource_type, set()).add(element)
    assert found == {t: set(elements) for t, elements in service.PRIMITIVE_CODES.items()}


def _prescription(*contained: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "contained": list(contained),
    }


def test_what_a_resource_contains_is_decided_as_other_data_only_when_it_is_other_data() -> None:
    """A Condition in a prescription is the patient's diagnosis, decided as one (a security test got a PSY
    one through a medication-only pull); a Medication, a Substance, a Location or a Device in it go with the
    prescription, and an uncategorised Observation with its lab report (a review found all of those
    withholding valid data); a sensitive label on anything contained marks its container."""
    compiled = _compiled(
        {"id": "meds", "permit": {"to": "ziekenhuizen-labs", "data": ["medicatie"]}},
        {"id": "lab", "permit": {"to": "ziekenhuizen-labs", "data": ["labuitslagen"]}},
    )
    decisions = ResourceDecisions(compiled, POLICY, _base("TREAT", "MedicationRequest"))
    with_things = _prescription(
        {"resourceType": "Medication", "id": "m"},
        {"resourceType": "Substance", "id": "s"},
        {"resourceType": "Location", "id": "l"},
        {"resourceType": "Device", "id": "d"},
        {"resourceType": "Practitioner", "id": "p"},
    )
    diagnosis = _prescription(
        {"resourceType": "Condition", "id": "c", "code": {"coding": [_coding(SINUSITIS)]}}
    )
    labelled = _prescription({"resourceType": "Medication", "id": "m", "meta": {"security": [_coding(PSY)]}})
    report = {
        "resourceType": "DiagnosticReport",
        "category": [{"coding": [_coding(REPORT_LAB)]}],
        "contained": [{"resourceType": "Observation", "id": "o", "code": {"coding": [_coding(HB)]}}],
        "result": [{"reference": "#o"}],
    }
    assert [decisions.permits(r) for r in (with_things, diagnosis, labelled, report)] == [
        True,
        False,
        False,
        True,
    ]
    garbled = [_prescription({"id": "x"}), {**_prescription(), "contained": {"resourceType": "Condition"}}]
    assert [decisions.permits(r) for r in garbled] == [False, False] and decisions.unreadable == 2
