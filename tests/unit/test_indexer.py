"""Index extraction: the rows a write puts in the search index decide what later searches find."""

import glob
import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest

from rzcp.fhir.search.definitions import R4_MODEL, SearchRegistry
from rzcp.store.indexer import evaluate, index_resource
from tests.conftest import SHARED_DATA

REG = SearchRegistry.default()
DATA = SHARED_DATA


def synthea(name: str = "uscore_bundle_patient_85.json") -> list[dict[str, Any]]:
    """The bundle's resources with its urn:uuid references rewritten to Type/id, as a server would."""
    bundle = json.loads((DATA / "synthea" / name).read_text())
    ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    return json.loads(re.sub(r"urn:uuid:[0-9a-f-]{36}", lambda m: ids.get(m.group(0), m.group(0)), text))


def nl_core() -> list[dict[str, Any]]:
    return [json.loads(Path(f).read_text()) for f in sorted(glob.glob(str(DATA / "nl-core" / "*.json")))]


def rows(resource: dict[str, Any], table: str, param: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k not in ("res_type", "param")}
        for r in index_resource(resource, REG).get(table, [])
        if r["param"] == param
    ]


def first(resources: list[dict[str, Any]], res_type: str) -> dict[str, Any]:
    return next(r for r in resources if r["resourceType"] == res_type)


def test_patient_rows() -> None:
    patient = first(synthea(), "Patient")
    assert {
        "system": "http://hl7.org/fhir/sid/us-ssn",
        "code": "999-47-5768",
        "text": "social security number",
    } in rows(patient, "idx_token", "identifier")
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
        "code": "SS",
        "text": "999-47-5768",
    } in rows(patient, "idx_token", "identifier:of-type")
    assert rows(patient, "idx_token", "gender") == [{"system": None, "code": "male", "text": None}]
    assert rows(patient, "idx_token", "phone") == [{"system": None, "code": "555-510-6254", "text": None}]
    assert rows(patient, "idx_token", "deceased") == [{"system": None, "code": "true", "text": None}]
    assert {r["value_exact"] for r in rows(patient, "idx_string", "name")} == {
        "Bosco882",
        "Lucien408",
        "Mr.",
        "PharmD",
    }
    assert rows(patient, "idx_string", "family") == [{"value_norm": "bosco882", "value_exact": "Bosco882"}]
    assert rows(patient, "idx_date", "birthdate") == [
        {"low": datetime(1940, 3, 29), "high": datetime(1940, 3, 29, 23, 59, 59, 999999)}
    ]
    assert rows(patient, "idx_date", "death-date")[0]["low"] == datetime(1977, 7, 14, 8, 17, 45)
    assert "idx_reference" not in index_resource({"resourceType": "Patient"}, REG)


def test_observation_rows() -> None:
    obs = first(synthea(), "Observation")
    assert rows(obs, "idx_token", "code") == [
        {"system": "http://loinc.org", "code": "9843-4", "text": "head occipital-frontal circumference"},
        {"system": None, "code": None, "text": "head circumference"},
    ]
    assert rows(obs, "idx_reference", "subject") == [
        {"target_type": "Patient", "target_id": "85", "url": None}
    ]
    assert rows(obs, "idx_reference", "patient") == [
        {"target_type": "Patient", "target_id": "85", "url": None}
    ]
    assert rows(obs, "idx_quantity", "value-quantity") == [
        {"value": 51.2, "low": pytest.approx(51.15), "high": pytest.approx(51.25),
         "system": "http://unitsofmeasure.org", "code": "cm", "unit": "cm"}
    ]  # fmt: skip
    assert rows(obs, "idx_uri", "_profile") == [
        {"value": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-head-circumference"}
    ]
    assert "_id" not in {r["param"] for t in index_resource(obs, REG).values() for r in t}


def test_reference_shapes_and_resolve_filter() -> None:
    obs = {
        "resourceType": "Observation",
        "subject": {"reference": "Group/g1"},
        "performer": [
            {"reference": "https://other.example/fhir/Practitioner/p1"},
            {"reference": "#contained"},
            {"identifier": {"system": "http://uzi", "value": "123"}},
            {"reference": "urn:uuid:0000"},
        ],
    }
    assert rows(obs, "idx_reference", "subject") == [{"target_type": "Group", "target_id": "g1", "url": None}]
    assert rows(obs, "idx_reference", "patient") == []  # subject is not a Patient
    assert rows(obs, "idx_reference", "performer") == [
        {
            "target_type": "Practitioner",
            "target_id": "p1",
            "url": "https://other.example/fhir/Practitioner/p1",
        },
        {"target_type": None, "target_id": None, "url": "urn:uuid:0000"},
    ]
    assert rows(obs, "idx_token", "performer:identifier") == [
        {"system": "http://uzi", "code": "123", "text": None}
    ]


def test_dates_from_period_timing_and_quantities_from_range_and_money() -> None:
    careplan = {"resourceType": "CarePlan", "period": {"start": "2020-01-01"}}
    assert rows(careplan, "idx_date", "date") == [
        {"low": datetime(2020, 1, 1), "high": datetime(9999, 12, 31, 23, 59, 59, 999999)}
    ]
    mr = {"resourceType": "MedicationAdministration", "effectivePeriod": {"end": "2021"}}
    assert rows(mr, "idx_date", "effective-time")[0]["low"] == datetime(1, 1, 1)
    cond = {"resourceType": "Condition", "onsetRange": {"low": {"value": 10, "unit": "a"}}}
    assert rows(cond, "idx_quantity", "onset-age") == [
        {"value": 10.0, "low": 9.5, "high": 1e300, "system": None, "code": None, "unit": "a"}
    ]
    claim = {"resourceType": "ChargeItem", "priceOverride": {"value": 12.5, "currency": "EUR"}}
    assert rows(claim, "idx_quantity", "price-override")[0]["code"] == "EUR"
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert rows(risk, "idx_quantity", "probability") == [
        {"value": 0.25, "low": 0.245, "high": 0.255, "system": None, "code": None, "unit": None}
    ]


def test_long_strings_are_truncated_to_the_column() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "x" * 2000}]}
    assert len(rows(patient, "idx_string", "family")[0]["value_exact"]) == 512


def test_odd_but_valid_data_never_raises() -> None:
    odd = [
        {
            "resourceType": "Observation",
            "valueQuantity": {"unit": "mg"},
            "effectiveTiming": {"event": ["2020"]},
        },
        {"resourceType": "Observation", "effectivePeriod": {}, "code": {"text": "only text"}},
        {
            "resourceType": "Patient",
            "birthDate": "2020",
            "name": [{"given": []}],
            "telecom": [{"system": "email"}],
        },
        {"resourceType": "Unknown", "id": "1"},
        {"no": "type"},
    ]
    for resource in odd + nl_core() + synthea("uscore_bundle_patient_355.json"):
        index_resource(resource, REG)
    assert rows(odd[0], "idx_date", "date")[0]["low"] == datetime(2020, 1, 1)
    assert rows(odd[1], "idx_token", "code") == [{"system": None, "code": None, "text": "only text"}]


def _without_primitive_extensions(value: Any) -> Any:
    """fhirpathpy fails `where(system='phone')` when `_system` carries an extension; the values are equal."""
    if isinstance(value, dict):
        return {k: _without_primitive_extensions(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_without_primitive_extensions(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):  # fhirpathpy drops an element holding only extensions; so may we
        return [_plain(v) for v in value if not (isinstance(v, dict) and set(v) == {"extension"})]
    return value


def test_fast_path_walker_agrees_with_fhirpathpy_on_real_data() -> None:
    """The walker replaces fhirpathpy for plain paths; on every data file both must give the same values."""
    resources = synthea() + nl_core()
    checked = 0
    for res_type in {r["resourceType"] for r in resources}:
        subset = [r for r in resources if r["resourceType"] == res_type]
        for param in REG.params_for(res_type).values():
            if not param.supported or param.column:
                continue
            for cp in param.compiled:
                if cp.steps is None:
                    continue
                text = re.sub(r"\.where\(resolve\(\) is \w+\)$", "", cp.text)
                reference = fhirpathpy.compile(text, R4_MODEL)
                for resource in subset:
                    try:
                        expected = _plain(reference(_without_primitive_extensions(resource)))
                    except ValueError:  # fhirpathpy refuses `as` on a collection; the walker filters each
                        continue
                    got = [v for v, _ in evaluate(resource, cp)]
                    assert _plain(_without_primitive_extensions(got)) == expected, (res_type, text)
                    checked += 1
    assert checked > 3000
