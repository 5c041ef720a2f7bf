"""What the OpenAPI document says about access, which FastAPI cannot infer: the gateway checks tokens and
context headers in its own code (one call per read, for speed, and the FHIR error format), not through
FastAPI's security classes, so without this the document showed every operation as open and none of the
headers a member system must send. Integrators generate clients from this document; schemathesis fuzzes
the headers from it too.

Which operations are open is a list of paths here, checked against the app by a test that calls every
operation without a token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

#: Operations that need no bearer token. The token endpoint authenticates the client in the request body
#: (a private_key_jwt assertion), revocation names the public client the token was issued to;
#: introspection takes a member system's own bearer token.
OPEN_PATHS = frozenset(
    {
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/auth/authorize",
        "/auth/token",
        "/auth/revoke",
        "/auth/jwks",
        "/consent/policy",
        "/healthz",
        "/readyz",
    }
)

SECURITY_SCHEMES: dict[str, Any] = {
    "memberSystem": {
        "type": "oauth2",
        "description": (
            "SMART Backend Services: a client_credentials grant with a private_key_jwt client assertion "
            "(RS384 or ES384, signed with a key registered for the client) posted to the token endpoint; "
            "the answer is a short-lived bearer JWT. Member systems, and the region's administrator and "
            "auditor systems, authenticate this way. Discovery: /fhir/.well-known/smart-configuration."
        ),
        "flows": {
            "clientCredentials": {
                "tokenUrl": "/auth/token",
                "scopes": {
                    "system/*.rs": "pull a patient's data from the region, read the member directory",
                    "system/Patient.c": "announce and withdraw that the member holds data for a patient",
                    "system/Bundle.c": "push a message to another member ($process-message)",
                },
            }
        },
    },
    "personLogin": {
        "type": "oauth2",
        "description": (
            "A person's login: the authorization code flow with PKCE (S256) through the OpenID Connect "
            "provider in configuration (DigiD for patients in production). Patients use the patient app's "
            "client; administrators and auditors the console's, with a second factor."
        ),
        "flows": {
            "authorizationCode": {
                "authorizationUrl": "/auth/authorize",
                "tokenUrl": "/auth/token",
                "scopes": {
                    "openid": "the person's identity",
                    "fhirUser": "the person's FHIR resource",
                    "patient/Patient.rs": "the patient's own regional Patient",
                    "patient/Consent.cruds": "the patient's own consents",
                    "patient/AuditEvent.rs": "who looked at the patient's data ($access-log)",
                    "patient/Organization.rs": "the member directory, to choose whom to allow",
                },
            }
        },
    },
}

SECURITY = [{"memberSystem": []}, {"personLogin": []}]

#: The request context headers of the contract (rzcp.auth.context checks them).
CONTEXT_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-Purpose-Of-Use",
        "in": "header",
        "required": False,
        "description": (
            "Why the data is asked for: a v3 PurposeOfUse code the region allows (GET /consent/policy). "
            "TREAT when absent for a system, PATRQT for a patient. ETREAT is break-the-glass: refused "
            "unless the region enabled it, and needs X-Break-Glass-Reason."
        ),
        "schema": {"type": "string", "examples": ["TREAT"]},
    },
    {
        "name": "X-Acting-Practitioner",
        "in": "header",
        "required": False,
        "description": (
            "The person on whose behalf a system acts, as `system|value`: a UZI (http://fhir.nl/fhir/"
            "NamingSystem/uzi-nr-pers), AGB or BIG number. Required for a member system's requests that "
            "touch patient data; never a BSN."
        ),
        "schema": {"type": "string", "examples": ["http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|123456782"]},
    },
    {
        "name": "X-Break-Glass-Reason",
        "in": "header",
        "required": False,
        "description": "Free text, with X-Purpose-Of-Use ETREAT only: why the emergency access.",
        "schema": {"type": "string"},
    },
]


def describe_access(document: dict[str, Any]) -> dict[str, Any]:
    """Add the security schemes, each operation's security and the FHIR operations' context headers, in
    place (idempotent)."""
    components = document.setdefault("components", {})
    if "securitySchemes" in components:
        return document
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in document.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            operation["security"] = SECURITY
            if path.startswith("/fhir/"):
                parameters = operation.get("parameters", [])
                named = {p["name"].lower() for p in parameters if p.get("in") == "header"}
                extra = [h for h in CONTEXT_HEADERS if h["name"].lower() not in named]
                operation["parameters"] = [*parameters, *extra]
    return document


def install(app: FastAPI) -> None:
    """Have `app.openapi()` (and so /openapi.json and `rzcp openapi`) describe access."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return describe_access(build())  # FastAPI caches the document; the change is made once

    app.openapi = openapi  # type: ignore[method-assign]
