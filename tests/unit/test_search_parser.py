"""Search parameter parsing: what the client may write, and what it gets back when it writes it wrong."""

from datetime import datetime

import pytest

from rzcp.errors import InvalidSearch
from rzcp.fhir.search.definitions import SearchRegistry, split_union
from rzcp.fhir.search.parser import (
    MAX_OR_VALUES,
    MAX_PARAMS,
    DateValue,
    NumberValue,
    OfTypeValue,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
    UriValue,
    parse_search,
)

REG = SearchRegistry.default()


def parse(res_type: str, *pairs: tuple[str, str], strict: bool = True) -> SearchQuery:
    return parse_search(res_type, list(pairs), REG, strict=strict, default_count=20, max_count=100)


def test_registry_splits_union_per_base_and_keeps_resource_level_params() -> None:
    code = REG.params_for("Observation")["code"]
    assert code.expression == "Observation.code"
    assert REG.params_for("DeviceRequest")["code"].expression == "(DeviceRequest.code as CodeableConcept)"
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= set(
        REG.params_for("Patient")
    )
    assert REG.params_for("Patient")["_id"].column == "res_id"
    assert not REG.params_for("Observation")["code-value-quantity"].supported  # composite
    assert "Patient" in REG.resource_types() and "Bundle" in REG.resource_types()
    assert REG.params_for("NoSuchType") == {}


def test_split_union_minds_parentheses_and_quotes() -> None:
    expr = "(A.value as Quantity) | A.x.where(system='a|b') | A.y.where(resolve() is Patient)"
    assert split_union(expr) == [
        "(A.value as Quantity)",
        "A.x.where(system='a|b')",
        "A.y.where(resolve() is Patient)",
    ]


def test_repeated_params_are_and_and_commas_are_or() -> None:
    q = parse("Observation", ("code", "a,b"), ("code", "c"))
    assert [c.values for c in q.criteria] == [
        (TokenValue(None, "a"), TokenValue(None, "b")),
        (TokenValue(None, "c"),),
    ]


def test_token_forms_and_escapes() -> None:
    q = parse("Patient", ("identifier", r"http://s|v\,1,|nosys,sys|,plain\|pipe"))
    assert q.criteria[0].values == (
        TokenValue("http://s", "v,1"),
        TokenValue(None, "nosys", no_system=True),
        TokenValue("sys", None),
        TokenValue(None, "plain|pipe"),
    )


def test_token_modifiers() -> None:
    q = parse("Observation", ("code:text", "Head"), ("code:not", "x"), ("identifier:of-type", "sys|MR|123"))
    assert q.criteria[0].values == (StringValue("Head", "head"),)
    assert q.criteria[1].modifier == "not"
    assert q.criteria[2].values == (OfTypeValue("sys", "MR", "123"),)


def test_date_prefixes() -> None:
    q = parse("Observation", ("date", "ge2020-01"), ("date", "lt2020-03-04T10:00Z"))
    assert q.criteria[0].values == (
        DateValue("ge", datetime(2020, 1, 1), datetime(2020, 1, 31, 23, 59, 59, 999999)),
    )
    assert q.criteria[1].values[0].prefix == "lt"


def test_quantity_and_number_values() -> None:
    q = parse(
        "Observation", ("value-quantity", "gt5.4|http://unitsofmeasure.org|mg"), ("value-quantity", "5||mg")
    )
    v = q.criteria[0].values[0]
    assert isinstance(v, NumberValue)
    assert (v.prefix, v.value, v.system, v.code) == ("gt", 5.4, "http://unitsofmeasure.org", "mg")
    assert q.criteria[1].values[0] == NumberValue("eq", 5.0, 4.5, 5.5, None, "mg")
    r = parse("RiskAssessment", ("probability", "ap0.8"))
    assert r.criteria[0].values[0].prefix == "ap"


def test_reference_forms() -> None:
    q = parse(
        "Observation",
        ("subject", "Patient/1"),
        ("patient", "2"),
        ("subject:Patient", "3"),
        ("subject", "https://other.example/fhir/Patient/4"),
        ("subject:identifier", "http://bsn|123"),
    )
    assert [c.values[0] for c in q.criteria] == [
        ReferenceValue("Patient", "1", None),
        ReferenceValue(None, "2", None),  # patient's targets are Patient and Group
        ReferenceValue("Patient", "3", None),
        ReferenceValue(None, None, "https://other.example/fhir/Patient/4"),
        TokenValue("http://bsn", "123"),
    ]
    assert parse("Condition", ("encounter", "9")).criteria[0].values[0] == ReferenceValue(
        "Encounter", "9", None
    )


def test_string_and_uri_modifiers() -> None:
    q = parse(
        "Patient", ("name:exact", "Zoë"), ("family:contains", "van"), ("_profile:below", "http://nictiz.nl/")
    )
    assert q.criteria[0].values == (StringValue("Zoë", "zoe"),)
    assert q.criteria[1].modifier == "contains"
    assert q.criteria[2].values == (UriValue("http://nictiz.nl/"),)


def test_missing_applies_to_every_type() -> None:
    q = parse("Observation", ("value-quantity:missing", "true"), ("subject:missing", "false"))
    assert [(c.modifier, c.missing) for c in q.criteria] == [("missing", True), ("missing", False)]
    with pytest.raises(InvalidSearch, match="subject:missing"):
        parse("Observation", ("subject:missing", "maybe"))


def test_result_parameters() -> None:
    q = parse(
        "Observation",
        ("_count", "500"),
        ("_sort", "-date,code,_id"),
        ("_summary", "count"),
        ("_elements", "code, subject"),
        ("_include", "Observation:subject:Patient"),
        ("_revinclude", "Provenance:target"),
        ("_total", "accurate"),
        ("_format", "json"),
        ("_page", "3"),
    )
    assert q.count == 100
    assert [(k.param.code, k.descending) for k in q.sort] == [("date", True), ("code", False), ("_id", False)]
    assert (q.summary, q.elements, q.total) == ("count", ("code", "subject"), "accurate")
    assert [(i.source_type, i.param.code, i.target_type) for i in q.includes] == [
        ("Observation", "subject", "Patient")
    ]
    assert [(i.source_type, i.param.code) for i in q.revincludes] == [("Provenance", "target")]
    assert parse("Observation", ("_count", "0")).count == 0
    assert parse("Observation").count == 20


@pytest.mark.parametrize(
    ("name", "value"),
    [("foo", "1"), ("subject.name", "x"), ("_has:Observation:subject:code", "x"), ("code:below", "x"),
     ("code-value-quantity", "x$1"), ("near", "1|2|3|km"), ("_include", "*"), ("_sort", "subject"),
     ("_include:iterate", "Observation:subject")],
)  # fmt: skip
def test_unsupported_is_an_error_when_strict_and_a_warning_when_lenient(name: str, value: str) -> None:
    with pytest.raises(InvalidSearch) as err:
        parse("Observation", (name, value))
    assert err.value.code == "not-supported"
    assert name.split("=")[0] in err.value.message or value in err.value.message
    q = parse("Observation", (name, value), ("status", "final"), strict=False)
    assert [c.param.code for c in q.criteria] == ["status"]
    assert len(q.warnings) == 1
    assert q.warnings[0].severity == "warning" and q.warnings[0].code == "not-supported"
    assert "was ignored" in q.warnings[0].diagnostics


@pytest.mark.parametrize(
    ("name", "value"),
    [("date", "2020-13-01"), ("date", "xx2020"), ("date", "gt"), ("value-quantity", "abc"),
     ("value-quantity", "1|2|3|4"), ("probability", "1|x|y"), ("_count", "-1"), ("_count", "ten"),
     ("_summary", "maybe"), ("_total", "all"), ("_include", "Observation"), ("_include", "Nope:subject"),
     ("identifier:of-type", "a|b"), ("code", "|"), ("subject", "Patient/"), ("_lastUpdated", "now"),
     ("_id", "")],
)  # fmt: skip
def test_bad_values_are_invalid_even_when_lenient(name: str, value: str) -> None:
    res_type = "RiskAssessment" if name == "probability" else "Observation"
    for strict in (True, False):
        with pytest.raises(InvalidSearch) as err:
            parse(res_type, (name, value), strict=strict)
        assert err.value.status == 400
        assert name.split(":")[0] in err.value.message


def test_caps_on_parameters_and_or_values() -> None:
    with pytest.raises(InvalidSearch, match="Too many search parameters"):
        parse("Observation", *[("status", "final")] * (MAX_PARAMS + 1))
    with pytest.raises(InvalidSearch, match="Too many values"):
        parse("Observation", ("code", ",".join(["x"] * (MAX_OR_VALUES + 1))))
    assert (
        len(parse("Observation", ("code", ",".join(["x"] * MAX_OR_VALUES))).criteria[0].values)
        == MAX_OR_VALUES
    )


def test_unknown_resource_type() -> None:
    with pytest.raises(InvalidSearch):
        parse("Nope", ("x", "1"))
