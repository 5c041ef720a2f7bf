"""May this principal do this FHIR interaction on this resource type? Plain Python, no HTTP.

- the token's scopes must allow it (SMART v1/v2, in the token's own context: system/, patient/, user/);
- an auditor reaches the audit trail only, and the audit trail is for auditors and (their own log)
  patients, not for admins; a person reading it must have logged in with a second factor (NEN 7513);
- a member system touching patient data must name the acting practitioner, never reads or writes a
  patient's consents (it gets decisions), and writes nothing of the registry through the REST API;
- a patient token is confined to the patient's compartment (`compartment.PatientCompartment`), and may read
  the region's directory of organisations (to name one in a consent).
"""

from __future__ import annotations

from collections.abc import Iterable
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
    registry: SearchRegistry
    compartment: PatientCompartment | None = None

    def may_search(self, res_type: str) -> None:
        """Raise unless this caller may search `res_type` too: what an `_include` or `_revinclude` reaches
        is held to the same rules as a search of its own (a member never sees a Consent that way). A
        patient's search of the directory (no compartment) includes the directory only: a Consent that
        names an organisation is not theirs to find from it."""
        if self.principal.is_patient and self.compartment is None and res_type not in DIRECTORY_TYPES:
            raise Forbidden(f"a search of the region's directory does not include {res_type} resources")
        authorize_interaction(self.principal, res_type, "search-type", self.registry)


#: Interactions that change a resource through the REST API.
WRITES = frozenset({"create", "update", "delete"})


def authorize_rest_write(
    principal: Principal, res_type: str, interaction: str, registry: SearchRegistry
) -> Access:
    """`authorize_interaction` for the REST API's writes, where a member system writes nothing: the
    gateway's resources are the region's registry (the directory's Organization and Endpoint, the regional
    Patient, consents, the trail), kept by the directory, the locator, patients and administrators. A
    member announces its patients with `$announce` and sends data with `$process-message`."""
    if interaction in WRITES and principal.is_system and principal.role == "member":
        raise Forbidden(
            f"member systems do not {interaction} {res_type} resources of the region's registry: "
            "they announce patients with $announce and send data with $process-message"
        )
    return authorize_interaction(principal, res_type, interaction, registry)


def authorize_interaction(
    principal: Principal, res_type: str, interaction: str, registry: SearchRegistry
) -> Access:
    if not allows(principal.scopes, res_type, interaction, context=_SCOPE_CONTEXT[principal.kind]):
        raise Forbidden(f"the token's scopes do not allow {interaction} on {res_type}")
    if res_type == CONSENT_TYPE and principal.is_system and principal.role == "member":
        raise Forbidden("member systems do not read or write a patient's consents; they get decisions")
    if (
        res_type == "Patient"
        and interaction == "history-type"
        and principal.is_system
        and principal.role == "member"
    ):
        raise Forbidden("member systems find a patient by BSN or id; they do not list the region's patients")
    if principal.role == "auditor" and res_type != AUDIT_TYPE:
        raise Forbidden("the auditor role reads the audit trail only")
    if res_type == AUDIT_TYPE and not principal.is_patient:
        roles = principal.roles if principal.kind == "person" else (principal.role,)
        if "auditor" not in roles:
            held = " and ".join(role for role in roles if role) or "none"
            raise Forbidden(
                f"the audit trail is for the auditor role; the caller's ({held}) does not read it"
            )
        if principal.kind == "person" and not principal.has_second_factor:
            raise Forbidden("reading the audit trail needs a login with a second factor")
    if principal.is_patient:
        if res_type in DIRECTORY_TYPES and interaction in ("read", "search-type"):
            return Access(principal, registry)  # the region's member organisations, which a consent names
        if principal.patient_id is None or compartment_param(registry, res_type) is None:
            raise Forbidden(f"a patient token does not reach {res_type} resources")
        if interaction == "history-type":
            raise Forbidden("a patient token reads the history of its own resources, one at a time")
        return Access(principal, registry, PatientCompartment(principal.patient_id, registry))
    if compartment_param(registry, res_type) is not None:
        require_practitioner(principal)
    return Access(principal, registry)


#: What a member system's Patient search may say besides naming the patient: how the answer is shaped.
_SHAPING_PARAMS = frozenset({"_count", "_elements", "_summary", "_format", "_pretty", "_page", "_total"})


def require_named_patient(principal: Principal, pairs: Iterable[tuple[str, str]]) -> None:
    """A member system finds one patient, by BSN (`identifier`) or regional id (`_id`): it does not list or
    browse the region's patients (a name, a birth date or no criterion at all would enumerate them)."""
    if not (principal.is_system and principal.role == "member"):
        return
    pairs = list(pairs)
    named = [part for name, value in pairs if name in ("identifier", "_id") for part in value.split(",")]
    others = {name for name, _ in pairs if name not in ("identifier", "_id")} - _SHAPING_PARAMS
    # `system|` with no value, a modifier (:not, :missing, :text ...) or another criterion would match many
    if not named or others or not all(part.rpartition("|")[2] for part in named):
        raise Forbidden(
            "member systems find a patient by BSN (identifier=http://fhir.nl/fhir/NamingSystem/bsn|<bsn>) "
            "or by the regional id (_id), and by nothing else"
        )
