"""The CapabilityStatement, built from what this process really serves: its resource types, the
interactions the router implements, and the search parameters the index supports for each type."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import rzcp
from rzcp.auth.access import WRITES
from rzcp.runtime import Runtime

_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
#: Written by the gateway only: its REST API reads them and refuses writes (405).
_READ_ONLY_TYPES = frozenset({"AuditEvent"})
_RESULT_PARAMS = ("_count", "_sort", "_summary", "_elements", "_include", "_revinclude", "_total")
#: The operations on one type that the consent registry and the audit trail add (README: Consent, The
#: audit trail), documented where a client looks for them.
_TYPE_OPERATIONS = {
    "Consent": [
        {
            "name": "evaluate",
            "definition": "https://rzcp.nl/fhir/OperationDefinition/Consent-evaluate",
            "documentation": "POST /fhir/Consent/$evaluate with a Parameters body: the consent engine's "
            "decision as a dry run, nothing shared (requester or requesterCategory; resourceType; source, "
            "sourceCategory, purpose, code, label, moment, patient; `draft`, a Consent as its resource, "
            "for 'what if I saved this'; or several `question`s, each with resourceType, code and label "
            "parts). Answers decision, basis, reason, provisional and the deciding consents (a `result` "
            "per question). A patient's token asks about themself.",
        }
    ],
    "AuditEvent": [
        {
            "name": "access-log",
            "definition": "https://rzcp.nl/fhir/OperationDefinition/AuditEvent-access-log",
            "documentation": "GET /fhir/AuditEvent/$access-log[?lang=nl|en&_count=n&_offset=m]: the "
            "patient's own access log in words (who, from which organisation, when, what, why, whether in "
            "an emergency), for a patient's token only.",
        }
    ],
}


def capability_statement(runtime: Runtime, base: str) -> dict[str, Any]:
    from rzcp.exchange.capability import with_exchange  # the pulled types and the exchange's operations

    statement = _build(runtime.registry, tuple(sorted(runtime.served_types)), base)
    return with_exchange(statement, runtime.policy, runtime.registry, runtime.served_types)


@lru_cache(maxsize=8)
def _build(registry: Any, types: tuple[str, ...], base: str) -> dict[str, Any]:
    resources = []
    for res_type in types:
        params = registry.params_for(res_type)
        supported = [p for p in params.values() if p.supported]
        references = sorted(p.code for p in supported if p.type == "reference")
        resources.append(
            {
                "type": res_type,
                "interaction": [
                    {"code": code}
                    for code in _INTERACTIONS
                    if res_type not in _READ_ONLY_TYPES or code not in WRITES
                ],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": False,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": False,
                "conditionalDelete": "not-supported",
                "searchInclude": [f"{res_type}:{code}" for code in references],
                "searchRevInclude": sorted(
                    {
                        f"{other}:{p.code}"
                        for other in types
                        for p in registry.params_for(other).values()
                        if p.supported and p.type == "reference" and res_type in p.targets
                    }
                ),
                "searchParam": [
                    {"name": p.code, "type": p.type, **({"definition": p.url} if p.url else {})}
                    for p in sorted(supported, key=lambda p: p.code)
                ],
                **({"operation": _TYPE_OPERATIONS[res_type]} if res_type in _TYPE_OPERATIONS else {}),
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "RZCP",
        "kind": "instance",
        "software": {"name": "RZCP gateway", "version": rzcp.__version__},
        "implementation": {"description": "RZCP regional FHIR gateway", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": [],
        "rest": [
            {
                "mode": "server",
                "documentation": "Search: strict handling with `Prefer: handling=strict`; lenient otherwise. "
                "Result parameters: " + ", ".join(_RESULT_PARAMS) + ".",
                "security": _security(base),
                "resource": resources,
            }
        ],
    }


def _security(base: str) -> dict[str, Any]:
    """SMART on FHIR, with the oauth-uris extension that older clients read instead of discovery."""
    auth = base.removesuffix("/fhir") + "/auth"
    return {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "SMART Backend Services (private_key_jwt, RS384/ES384) for member systems; "
        "authorization code with PKCE (S256) for patients. Tokens are bearer JWTs.",
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "token", "valueUri": f"{auth}/token"},
                    {"url": "authorize", "valueUri": f"{auth}/authorize"},
                    {"url": "introspect", "valueUri": f"{auth}/introspect"},
                ],
            }
        ],
    }
