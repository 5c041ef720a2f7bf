"""The policy file: the repository's own validates; a broken one stops start-up with one clear line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rzcp.consent.policy import Policy, PolicyError, load_policy


def test_the_region_policy_loads(policy: Policy) -> None:
    assert policy.document.default_decision == "deny"
    assert policy.emergency.enabled is False
    assert {"huisartsen", "ggz", "verpleging-verzorging", "apotheken", "ziekenhuizen-labs", "overige"} <= (
        policy.organisation_categories
    )
    assert policy.category_codes("V6") == {"V6", "ziekenhuizen-labs"}
    assert policy.purpose_chain("ETREAT") == {"ETREAT", "TREAT"}


def test_lab_observations_fall_in_lab_results(policy: Policy) -> None:
    lab = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    found = policy.categories_of("Observation", frozenset({lab}))
    assert "urn:oid:2.16.840.1.113883.2.4.3.111.5.10.1|GGC012" in found.sure
    unknown = policy.categories_of("Observation", None)
    assert "urn:oid:2.16.840.1.113883.2.4.3.111.5.10.1|GGC012" in unknown.maybe


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(default_decision="permit"), "default_decision"),
        (
            lambda d: d["data_categories"][1]["covers"][0].update(resource="MedicationOrder"),
            "data_categories.1.covers.0.resource",
        ),
        (lambda d: d["emergency"].update(data_categories=["unknown"]), "emergency.data_categories"),
        (lambda d: d["purposes"].append({"code": "TREAT", "name": "again"}), "purposes.code"),
        (
            lambda d: d["sensitive_labels"].append({"label": "PSY", "name": "no system"}),
            "sensitive_labels.8.label",
        ),
        (lambda d: d.pop("purposes"), "purposes"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_a_broken_policy_names_file_and_field_in_one_line(
    tmp_path: Path, policy_data: dict[str, Any], change: Any, expected: str
) -> None:
    data = copy.deepcopy(policy_data)
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_missing_and_unparsable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PolicyError, match="cannot read") as given:
        load_policy(tmp_path / "absent.yaml")
    assert "RZCP_CONSENT_POLICY_PATH" not in str(given.value)  # the operator named that file
    # an installed package (no checkout beside it) has no default policy: the error says what to set
    monkeypatch.setattr("rzcp.consent.policy.DEFAULT_POLICY_PATH", tmp_path / "consent" / "policy.yaml")
    with pytest.raises(PolicyError, match="set RZCP_CONSENT_POLICY_PATH"):
        load_policy()
    with pytest.raises(PolicyError, match="line"):
        load_policy(_write(tmp_path, "version: [1\n"))
