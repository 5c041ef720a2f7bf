"""Fixtures of the consent tests: the region's policy, as a file and as parsed data."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rzcp.consent.policy import DEFAULT_POLICY_PATH, Policy, load_policy, parse_policy


@pytest.fixture(scope="session")
def policy_data() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="session")
def emergency_policy(policy_data: dict[str, Any]) -> Policy:
    data = {**policy_data, "emergency": {**policy_data["emergency"], "enabled": True}}
    return parse_policy(data)
