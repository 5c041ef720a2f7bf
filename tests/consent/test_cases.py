"""The normative decision cases of consent/cases/, one test each (ids are the file names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rzcp.consent.cases import CASES_DIR, load_case
from rzcp.consent.compiled import compile_consents
from rzcp.consent.engine import decide
from rzcp.consent.policy import DEFAULT_POLICY_PATH
from rzcp.consent.validation import validate_consent

CASE_FILES = sorted(CASES_DIR.glob("*.yaml"))
POLICY_DATA: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
MEMBERS = {"00000101", "00000201", "00000202", "00000301", "00000401", "00000501", "00000601"}


def test_there_are_at_least_sixty_cases() -> None:
    assert len(CASE_FILES) >= 60


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_case(path: Path) -> None:
    case = load_case(path, policy_data=POLICY_DATA)
    decision = decide(compile_consents(case.consents), case.policy, case.request)
    assert (decision.effect, decision.basis) == (case.decision, case.because), decision.reason
    if case.deciding is not None:
        assert sorted(decision.consent_ids) == sorted(case.deciding), decision.reason
    if case.provisional is not None:
        assert decision.provisional is case.provisional, decision.reason
    else:
        assert decision.provisional is False, decision.reason
    assert decision.reason


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_case_consents_are_valid_r4_and_pass_the_region_checks(path: Path) -> None:
    from fhir.resources.R4B.consent import Consent

    case = load_case(path, policy_data=POLICY_DATA)
    for consent in case.consents:
        Consent.model_validate(consent)
        validate_consent(consent, policy=case.policy, known_members=MEMBERS)
