"""Patients logged in through the development identity provider, for the consent and audit tests."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from tests.auth.test_patient_login import (
    as_patient,
    browser,
    login,
    login_app,
    new_bsn,
    patient_token,
    redeem,
)

__all__ = ["as_patient", "browser", "log_reader_token", "login_app", "new_bsn", "patient_token"]

LOG_SCOPES = "patient/Patient.rs patient/Consent.cruds patient/AuditEvent.rs launch/patient openid"


async def log_reader_token(browser: httpx.AsyncClient, bsn: str) -> dict[str, Any]:
    """A patient's token that also reads their own access log (what the patient app asks for)."""
    verifier = secrets.token_urlsafe(48)
    code = (await login(browser, bsn, verifier, scope=LOG_SCOPES))["code"]
    response = await redeem(browser, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()
