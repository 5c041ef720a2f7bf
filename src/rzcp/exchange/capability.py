"""What the exchange adds to the CapabilityStatement: the pulled resource types (search by patient only)
and the operations of the locator, the pull and the push, each with its documentation."""

from __future__ import annotations

import copy
from typing import Any

from rzcp.exchange.params import pull_search_params
from rzcp.exchange.service import covered_types

_PATIENT_PARAMS = [
    {"name": "patient", "type": "reference", "documentation": "Patient/<regional id>: required (or subject)"},
    {"name": "subject", "type": "reference"},
    {
        "name": "patient.identifier",
        "type": "token",
        "documentation": "http://fhir.nl/fhir/NamingSystem/bsn|<bsn>",
    },
]

OPERATIONS = [
    {
        "name": "announce",
        "definition": "https://rzcp.nl/fhir/OperationDefinition/Patient-announce",
        "documentation": "POST /fhir/Patient/$announce with a Parameters body: `identifier` "
        "(valueIdentifier, the BSN with system http://fhir.nl/fhir/NamingSystem/bsn) and `patient` "
        "(valueReference Patient/<the member's own id>). The calling member holds data for this "
        "patient; answers a Parameters with `patient`, the regional Patient. Needs system/Patient.c.",
    },
    {
        "name": "withdraw",
        "definition": "https://rzcp.nl/fhir/OperationDefinition/Patient-withdraw",
        "documentation": "POST /fhir/Patient/$withdraw, the same body (`patient` optional: all local "
        "ids): the calling member no longer holds data for the patient.",
    },
    {
        "name": "everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        "documentation": "GET /fhir/Patient/<regional id>/$everything[?_type=...&_count=...]: the "
        "regional Patient, then the patient's data from every member that holds it and may share it "
        "with the caller, tagged with its source. start, end and _since are not supported.",
    },
    {
        "name": "process-message",
        "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
        "documentation": "POST /fhir/$process-message with a message Bundle (MessageHeader.destination names "
        "one member by URA in receiver.identifier, or by its endpoint; a Patient with a BSN). Checked "
        "against the patient's consent, stored, answered 202 with a Location: GET it for the delivery "
        "as a Task. Delivered at least once with the message id as Idempotency-Key and Bundle.id.",
    },
]


#: (statement, policy) by identity -> the statement with the exchange's additions; the builder caches the
#: statement, so this holds a handful of entries (the objects are kept, so their ids stay theirs).
_CACHE: dict[tuple[int, int], tuple[Any, Any, dict[str, Any]]] = {}


def with_exchange(
    statement: dict[str, Any], policy: Any, registry: Any, served: frozenset[str]
) -> dict[str, Any]:
    key = (id(statement), id(policy))
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) > 16:
            _CACHE.clear()
        found = _CACHE[key] = (statement, policy, _added(statement, policy, registry, served))
    return found[2]


def _added(statement: dict[str, Any], policy: Any, registry: Any, served: frozenset[str]) -> dict[str, Any]:
    statement = copy.deepcopy(statement)
    rest = statement["rest"][0]
    for res_type in covered_types(policy, registry):
        if res_type in served:
            continue
        rest["resource"].append(
            {
                "type": res_type,
                "documentation": "Pulled from the members that hold the patient's data and may share it "
                "(consent per source and per resource); never stored at the gateway. The type's other "
                "search parameters are checked at the gateway (Prefer: handling=strict refuses an unknown "
                "one) and sent on; _sort, _count, _elements and _summary are applied by the gateway to the "
                "merged answer, which always carries its exact total; _include, _revinclude and "
                "_summary=count are not supported.",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    *_PATIENT_PARAMS,
                    *(
                        {"name": code, "type": kind, **({"definition": url} if url else {})}
                        for code, kind, url in pull_search_params(res_type, registry)
                    ),
                ],
            }
        )
    rest["resource"].sort(key=lambda r: r["type"])
    rest["operation"] = [*rest.get("operation", []), *OPERATIONS]
    return statement
