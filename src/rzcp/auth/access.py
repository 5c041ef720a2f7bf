"""May this principal do this FHIR interaction on this resource type? Plain Python, no HTTP.

- the token's scopes must allow it (SMART v1/v2, in the token's own context: system/, patient/, user/);
- an auditor reaches the audit trail only, and the audit trail is for auditors, admins and (their own
  log) patients; a person reading it must have logged in with a second factor (NEN 7513);
- a member system touching patient data must name the acting practitioner, and never reads or writes a
  patient's consents (it gets decisions);
- a patient token is confined to the patient's compartment (`compartment.PatientCompartment`), and may read
  the region's directory of organisations (to name one in a consent).
"""

from __future__ import annotations

from dataclasses import dataclass

from rzcp.auth.compartment import PatientCompartment, compartment_param
from rzcp.auth.context import require_practitioner
from rzcp.auth.principal import Principal
from rzcp.auth.scopes import allows
from rzcp.errors import Forbidden
from rzcp.fhir.search.definitions import SearchRegistry

_SCOPE_CONTEXT = {"system": "system", "patient": "patient", "person": "user"}
AUDIT_TYPE = "AuditEvent"
CONSENT_TYPE = "Consent"
#: The region's directory: no patient data, and what a patient must see to name an organisation in a consent.
DIRECTORY_TYPES = frozenset({"Organization"})


@dataclass(frozen=True)
class Access:
    """A permitted interaction; `compartment` is set when the caller is a patient."""

    principal: Principal
    compartment: PatientCompartment | None = None


def authorize_interaction(
    principal: Principal, res_type: str, interaction: str, registry: SearchRegistry
) -> Access:
    if not allows(principal.scopes, res_type, interaction, context=_SCOPE_CONTEXT[principal.kind]):
        raise Forbidden(f"the token's scopes do not allow {interaction} on {res_type}")
    if res_type == CONSENT_TYPE and principal.is_system and principal.role == "member":
        raise Forbidden("member systems do not read or write a patient's consents; they get decisions")
    if principal.role == "auditor" and res_type != AUDIT_TYPE:
        raise Forbidden("the auditor role reads the audit trail only")
    if res_type == AUDIT_TYPE and not principal.is_patient:
        if principal.role not in ("auditor", "admin"):
            raise Forbidden("the audit trail is for auditors")
        if principal.kind == "person":
            if "auditor" not in principal.roles:
                raise Forbidden("the audit trail is for auditors; the admin role alone does not read it")
            if not principal.has_second_factor:
                raise Forbidden("reading the audit trail needs a login with a second factor")
    if principal.is_patient:
        if res_type in DIRECTORY_TYPES and interaction in ("read", "search-type"):
            return Access(principal)  # the region's member organisations, which a consent names
        if principal.patient_id is None or compartment_param(registry, res_type) is None:
            raise Forbidden(f"a patient token does not reach {res_type} resources")
        if interaction == "history-type":
            raise Forbidden("a patient token reads the history of its own resources, one at a time")
        return Access(principal, PatientCompartment(principal.patient_id, registry))
    if compartment_param(registry, res_type) is not None:
        require_practitioner(principal)
    return Access(principal)
