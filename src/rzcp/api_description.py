"""What the OpenAPI document says that FastAPI cannot infer: the gateway reads tokens, context headers,
FHIR bodies and search parameters in its own code (one call per read, for speed, and the FHIR error
format), not through FastAPI's security classes and models. Without this the document showed every
operation as open, with no body, no search parameter, none of the headers a member system must send, and
a 422 validation error the gateway never gives (its errors are OperationOutcomes). Integrators generate
clients from this document; schemathesis fuzzes what it declares.

Which operations are open is a list of paths here, checked against the app by a test that calls every
operation without a token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from rzcp.exchange.params import pull_search_params
from rzcp.fhir.search.definitions import SearchRegistry

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
                    "system/*.read": "the SMART v1 form of system/*.rs",
                    "system/*.cruds": "the region's administrator systems: the registry resources",
                    "system/AuditEvent.rs": "an auditor system: search the audit trail",
                    "system/Patient.r": "$everything for a patient (system/*.rs grants it)",
                    "system/{Type}.s": "a pull of that type, e.g. system/Condition.s (system/*.rs grants it)",
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

#: Operations only one kind of caller may use, and the scope it needs (others get a 403).
SECURITY_BY_PATH: dict[str, list[dict[str, list[str]]]] = {
    "/fhir/Patient/$announce": [{"memberSystem": ["system/Patient.c"]}],
    "/fhir/Patient/$withdraw": [{"memberSystem": ["system/Patient.c"]}],
    "/fhir/$process-message": [{"memberSystem": ["system/Bundle.c"]}],
    # the sender's or the receiver's system, whatever its scopes
    "/fhir/$process-message/{id}": [{"memberSystem": []}],
    "/fhir/Patient/{id}/$everything": [{"memberSystem": ["system/Patient.r"]}],
    "/fhir/AuditEvent/$access-log": [{"personLogin": ["patient/AuditEvent.rs"]}],
    "/auth/introspect": [{"memberSystem": []}],
}
PULL_TAG = "FHIR exchange"


def _pulled_type(operation: dict[str, Any]) -> str | None:
    """The type a pull operation searches (`GET /fhir/{Type}` of a clinical type the members hold)."""
    operation_id = operation.get("operationId", "")
    if PULL_TAG in operation.get("tags", ()) and operation_id.startswith("pull_"):
        return operation_id.split("_")[1]
    return None


def _pull_security(resource_type: str) -> list[dict[str, list[str]]]:
    """A pull is a member system's, with the search permission on its type."""
    return [{"memberSystem": [f"system/{resource_type}.s"]}]


FHIR_JSON = "application/fhir+json"  # the media type alone: rzcp.fhir.wire.FHIR_JSON adds the charset

SCHEMAS: dict[str, Any] = {
    "OperationOutcome": {
        "type": "object",
        "description": "Every error of /fhir and of the console's API: what is wrong, and where.",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string"},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "OAuthError": {
        "type": "object",
        "description": "The token, introspection and revocation endpoints' errors (RFC 6749 5.2).",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "Resource": {
        "type": "object",
        "description": "A FHIR R4 resource as JSON; validated by the gateway against the R4 definitions.",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
        "additionalProperties": True,
    },
    "Parameters": {
        "type": "object",
        "required": ["resourceType", "parameter"],
        "properties": {
            "resourceType": {"const": "Parameters"},
            "parameter": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                    "additionalProperties": True,
                },
            },
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _fhir_body(schema: str, description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"required": True, "description": description, "content": {FHIR_JSON: media}}


def _json_body(properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": required,
        "properties": {name: {"type": kind} for name, kind in properties.items()},
    }
    return {"required": True, "content": {"application/json": {"schema": schema}}}


#: Request bodies, by (method, path): the gateway reads them itself (FHIR JSON, forms, console JSON).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/fhir/{type}"): _fhir_body("Resource", "The resource to create; its id is the server's."),
    ("put", "/fhir/{type}/{id}"): _fhir_body("Resource", "The resource, with the id of the path."),
    ("post", "/fhir/Patient/$announce"): _fhir_body(
        "Parameters",
        "identifier: the BSN (system http://fhir.nl/fhir/NamingSystem/bsn); patient: the member's own "
        "Patient/<id>.",
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "identifier",
                    "valueIdentifier": {
                        "system": "http://fhir.nl/fhir/NamingSystem/bsn",
                        "value": "999911120",
                    },
                },
                {"name": "patient", "valueReference": {"reference": "Patient/local-123"}},
            ],
        },
    ),
    ("post", "/fhir/Patient/$withdraw"): _fhir_body(
        "Parameters", "identifier: the BSN; patient (optional): the member's own Patient/<id>."
    ),
    ("post", "/fhir/$process-message"): _fhir_body(
        "Resource", "A FHIR message: a Bundle of type message, its MessageHeader first."
    ),
    ("post", "/fhir/Consent/$evaluate"): _fhir_body(
        "Parameters",
        "requester and/or requesterCategory, resourceType (or several `question`s, each with resourceType, "
        "code and label parts), and optionally source, sourceCategory, purpose, code, label, moment, "
        "patient, draft (README, Consent).",
    ),
    ("post", "/fhir/{type}/_search"): {
        "required": False,
        "description": "The search parameters as a form, as in the query of GET /fhir/{type}.",
        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
    },
    ("post", "/auth/token"): {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"enum": ["client_credentials", "authorization_code"]},
                        "scope": {"type": "string"},
                        "client_assertion_type": {
                            "const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                        },
                        "client_assertion": {
                            "type": "string",
                            "description": "the signed JWT (RS384 or ES384)",
                        },
                        "code": {"type": "string"},
                        "code_verifier": {"type": "string"},
                        "redirect_uri": {"type": "string"},
                        "client_id": {"type": "string"},
                    },
                }
            }
        },
    },
    ("post", "/admin/api/members"): _json_body(
        {"ura": "string", "name": "string", "category": "string", "endpoint": "string", "adapter": "string"},
        ["ura", "name", "category", "endpoint"],
    ),
    ("post", "/admin/api/clients"): _json_body(
        {
            "client_id": "string",
            "member_ura": "string",
            "scope": "string",
            "role": "string",
            "jwks": "object",
            "jwks_url": "string",
        },
        ["client_id", "member_ura", "scope"],
    ),
    ("put", "/admin/api/clients/{client_id}/keys"): _json_body({"jwks": "object", "jwks_url": "string"}, []),
    ("put", "/admin/api/clients/{client_id}/scope"): _json_body({"scope": "string"}, ["scope"]),
}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


#: The result parameters every FHIR search and pull takes. A pull lists its type's own search parameters
#: too; a search of the gateway's own store takes its type's (listed per type in the CapabilityStatement,
#: /fhir/metadata).
RESULT_PARAMETERS = [
    _query("_count", "entries per page"),
    _query("_sort", "comma-separated search parameters, - for descending"),
    _query("_elements", "comma-separated elements to keep in each entry"),
    _query("_summary", "true, text, data, count (a search of the store), or false"),
]
STORE_PARAMETERS = [
    _query("_id", "resource ids, comma-separated"),
    _query("_lastUpdated", "a date with an optional prefix (ge2026-01-01)"),
    _query("_include", "Type:reference-parameter, the referenced resources too"),
    _query("_revinclude", "Type:reference-parameter, the resources that refer to these too"),
    _query("_total", "none, estimate or accurate"),
]
PULL_PARAMETERS = [
    _query("patient", "the regional Patient/<id>"),
    _query("subject", "the regional Patient/<id>, as patient"),
    _query("patient.identifier", "http://fhir.nl/fhir/NamingSystem/bsn|<BSN>"),
    *RESULT_PARAMETERS,
]


def _type_parameters(resource_type: str) -> list[dict[str, Any]]:
    """The type's own R4 search parameters, which a pull checks and sends on to the members."""
    return [
        _query(code, f"R4 {kind} search parameter, sent on to the members" + (f": {url}" if url else ""))
        for code, kind, url in pull_search_params(resource_type, SearchRegistry.default())
    ]


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
            "NamingSystem/uzi-nr-pers), AGB or BIG number, or `urn:oid:<the organisation's OID>|<its own "
            "identifier>` (a service account such as an admissions feed). Required for a member system's "
            "requests that touch patient data (a 400 without it); never a BSN."
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


def _security(path: str, operation: dict[str, Any]) -> list[dict[str, list[str]]]:
    if path in OPEN_PATHS:
        return []
    if path in SECURITY_BY_PATH:
        return SECURITY_BY_PATH[path]
    pulled = _pulled_type(operation)
    if pulled is not None:
        return _pull_security(pulled)
    return SECURITY


def _errors(path: str, secured: bool) -> dict[str, Any]:
    content = {FHIR_JSON: {"schema": _ref("OperationOutcome")}}
    if path.startswith("/auth/"):
        oauth = {"application/json": {"schema": _ref("OAuthError")}}
        errors = {"4XX": {"description": "An OAuth error", "content": oauth}}
        if secured:  # introspection: the caller's own token is checked as on the FHIR API
            errors["401"] = {"description": "No valid member system's token", "content": content}
        return errors
    errors = {"4XX": {"description": "An OperationOutcome naming what is wrong", "content": content}}
    if secured:
        errors["401"] = {"description": "No token, or one that is no longer valid", "content": content}
        errors["403"] = {"description": "The token's scopes or role do not allow this", "content": content}
    return errors


def describe_access(document: dict[str, Any]) -> dict[str, Any]:
    """Add the security schemes, each operation's security, bodies, common search parameters, the FHIR
    operations' context headers and the errors as they are given, in place (idempotent)."""
    components = document.setdefault("components", {})
    if "securitySchemes" in components:
        return document
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            operation["security"] = _security(path, operation)
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's; the gateway answers a bad path or query with a 400
            responses.update(_errors(path, bool(operation["security"])))
            if (method, path) in BODIES:
                operation["requestBody"] = BODIES[(method, path)]
            parameters = operation.get("parameters", [])
            if path == "/fhir/Patient/{id}/$everything":
                kept = [q for q in RESULT_PARAMETERS if q["name"] != "_sort"]
                parameters = [*parameters, *kept, _query("_type", "comma-separated types to include")]
            elif method == "get" and (pulled := _pulled_type(operation)) is not None:
                parameters = [*parameters, *PULL_PARAMETERS, *_type_parameters(pulled)]
            elif method == "get" and path == "/fhir/{type}":
                parameters = [*parameters, *RESULT_PARAMETERS, *STORE_PARAMETERS]
            if operation["security"] and path.startswith("/fhir/"):
                named = {p["name"].lower() for p in parameters if p.get("in") == "header"}
                parameters = [*parameters, *(h for h in CONTEXT_HEADERS if h["name"].lower() not in named)]
            if parameters:
                operation["parameters"] = parameters
    return document


def install(app: FastAPI) -> None:
    """Have `app.openapi()` (and so /openapi.json and `rzcp openapi`) describe access."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return describe_access(build())  # FastAPI caches the document; the change is made once

    app.openapi = openapi  # type: ignore[method-assign]
