"""The simulated members' data: BSNs with the 11-check, Synthea's urn:uuid references, id prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from rzcp.membersim.bsn import BSN_SYSTEM, derive_test_bsn, is_valid_bsn
from rzcp.membersim.loader import read_bsn_map, read_member_data
from tests.conftest import SHARED_DATA

SYNTHEA = SHARED_DATA / "synthea" / "uscore_bundle_patient_355.json"
LONG = SHARED_DATA / "nl-core" / "l-core-AbilityToPerformMouthcareActivities.Prosthesis.Product-01.json"


def test_bsn_eleven_check() -> None:
    assert is_valid_bsn("111222333") and is_valid_bsn("999911120")
    assert not is_valid_bsn("111222334") and not is_valid_bsn("12345678") and not is_valid_bsn("000000000")
    first = derive_test_bsn("patient-a")
    assert first == derive_test_bsn("patient-a") and first.startswith("9999") and is_valid_bsn(first)
    assert derive_test_bsn("patient-a", taken={first}) != first


def references(value: object) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "reference" and isinstance(v, str)] + [
            r for v in value.values() for r in references(v)
        ]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def test_synthea_ids_and_references_are_rewritten() -> None:
    raw = orjson.loads(SYNTHEA.read_bytes())
    data = read_member_data([SYNTHEA], id_prefix="zh-")
    assert len(data.resources) == len(raw["entry"])
    ids = {(r["resourceType"], r["id"]) for r in data.resources}
    for entry in raw["entry"]:
        assert (entry["resource"]["resourceType"], "zh-" + entry["fullUrl"].removeprefix("urn:uuid:")) in ids
    refs = [ref for r in data.resources for ref in references(r)]
    assert refs and not [ref for ref in refs if ref.startswith("urn:uuid:")]
    internal = [ref for ref in refs if not ref.startswith("#")]
    assert all(tuple(ref.split("/")) in ids for ref in internal)  # every reference resolves in the load


def test_the_same_person_gets_the_same_bsn_at_every_member() -> None:
    gp = read_member_data([SYNTHEA], id_prefix="gp-")
    hospital = read_member_data([SYNTHEA], id_prefix="zh-")
    assert list(gp.patients.values()) == list(hospital.patients.values())
    assert list(gp.patients) != list(hospital.patients)
    patient = next(r for r in gp.resources if r["resourceType"] == "Patient")
    assert patient["identifier"][0] == {"system": BSN_SYSTEM, "value": next(iter(gp.patients.values()))}


def test_bsn_map_types_and_long_ids(tmp_path: Path) -> None:
    source_id = orjson.loads(SYNTHEA.read_bytes())["entry"][0]["fullUrl"].removeprefix("urn:uuid:")
    mapping = tmp_path / "bsn.json"
    mapping.write_text(json.dumps({source_id: "999911120"}))
    data = read_member_data([SYNTHEA], types=["MedicationRequest"], bsn_map=read_bsn_map(mapping))
    assert {r["resourceType"] for r in data.resources} == {"Patient", "MedicationRequest"}
    assert list(data.patients.values()) == ["999911120"]
    mapping.write_text(json.dumps({source_id: "123456789"}))
    with pytest.raises(ValueError, match="invalid BSN"):
        read_bsn_map(mapping)
    # A key that names no patient (here the Patient's own id rather than its fullUrl UUID, a typo away)
    # is refused, naming the keys that would work, instead of leaving that patient a derived BSN.
    with pytest.raises(ValueError, match=f"names no patient.*{source_id}"):
        read_member_data([SYNTHEA], bsn_map={"not-a-patient": "999911120"})
    long = read_member_data([LONG], id_prefix="a-long-prefix-")
    assert all(len(r["id"]) <= 64 for r in long.resources)
