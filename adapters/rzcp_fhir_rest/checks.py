"""What a member returned, checked before anything is passed on.

Each entry of a search answer goes through `EntryChecker.check`, which keeps it or says why not:
- not a JSON object with a `resourceType` and a valid `id`: `invalid-entry`;
- an OperationOutcome in the answer (search mode `outcome`): reported as `member-warning`, not kept;
- another type than the one searched: `wrong-type`;
- not about the patient searched for (no reference to `Patient/<id>` in the elements the type's `patient`
  search parameter reads, or for a Patient search another id): `other-patient`;
- excluded by a search parameter the member ignored: `not-matching`.

Re-applied parameters, where this is cheap (no FHIRPath evaluation, no terminology):
- always: the type, the patient (`patient`/`subject`, or `_id` for Patient), and `_id`;
- a `token` parameter whose R4 expression is a plain `Type.element` path (Observation `code`, `category`,
  `status`; Condition `clinical-status`; `identifier` of most types ...): `code`, `system|code`, `|code`,
  `system|`, comma for "or"; without a modifier;
- a `reference` parameter with a plain path (`encounter=Encounter/1` ...): `Type/id` or a bare id.
Not re-applied, and passed on as the member filtered them: dates, quantities, strings, modifiers,
chained parameters, and parameters whose expression needs resolve(), where() or a type cast.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rzcp.exchange.adapters import Problem, ProblemCode, SearchQuery
from rzcp.fhir.search.definitions import SearchRegistry

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_SIMPLE = re.compile(r"^\(?([A-Z][A-Za-z]+)\.([a-z][A-Za-z]*)\)?$")
_PATIENT_ELEMENT = re.compile(r"^\(?[A-Z][A-Za-z]+\.([a-z][A-Za-z]*)\b")


def patient_param(registry: SearchRegistry, res_type: str) -> str | None:
    """The parameter that scopes a search of `res_type` to one patient: `_id`, `patient` or `subject`."""
    if res_type == "Patient":
        return "_id"
    if registry.get(res_type, "patient") is not None:
        return "patient"
    subject = registry.get(res_type, "subject")
    if subject is not None and (not subject.targets or "Patient" in subject.targets):
        return "subject"
    return None


def patient_elements(registry: SearchRegistry, res_type: str) -> tuple[str, ...]:
    """The top-level elements of `res_type` that the patient parameter reads (`subject`, `patient` ...)."""
    name = patient_param(registry, res_type)
    definition = registry.get(res_type, name) if name and name != "_id" else None
    if definition is None:
        return ()
    found = []
    for member in definition.members:
        match = _PATIENT_ELEMENT.match(member)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return tuple(found)


def _reference_matches(reference: Any, target_type: str | None, target_id: str) -> bool:
    if not isinstance(reference, dict):
        return False
    ref = reference.get("reference")
    if not isinstance(ref, str):
        return False
    ref = ref.split("/_history/")[0]
    parts = ref.rstrip("/").split("/")
    if len(parts) < 2:
        return False
    ref_type, ref_id = parts[-2], parts[-1]
    return ref_id == target_id and (target_type is None or ref_type == target_type)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _codings(value: Any) -> Iterable[tuple[str | None, str | None]]:
    """(system, code) pairs of a code, Coding, CodeableConcept or Identifier value."""
    for item in _as_list(value):
        if isinstance(item, str | bool):
            yield None, str(item).lower() if isinstance(item, bool) else item
        elif isinstance(item, dict):
            if "coding" in item:
                for coding in _as_list(item.get("coding")):
                    if isinstance(coding, dict):
                        yield coding.get("system"), coding.get("code")
            elif "value" in item and "code" not in item:  # Identifier
                yield item.get("system"), item.get("value")
            else:
                yield item.get("system"), item.get("code")


def _token_matches(value: Any, wanted: str) -> bool:
    for alternative in wanted.split(","):
        system, sep, code = alternative.partition("|")
        for have_system, have_code in _codings(value):
            if not sep:
                if have_code == alternative:
                    return True
            elif system == "":
                if have_system is None and have_code == code:
                    return True
            elif have_system == system and (code == "" or have_code == code):
                return True
    return False


@dataclass
class _Filter:
    name: str
    kind: str  # "token" | "reference" | "id"
    element: str
    value: str

    def matches(self, resource: dict[str, Any]) -> bool:
        if self.kind == "id":
            return resource.get("id") in self.value.split(",")
        value = resource.get(self.element)
        if self.kind == "token":
            return _token_matches(value, self.value)
        for alternative in self.value.split(","):
            target_type, _, target_id = alternative.rpartition("/")
            if any(_reference_matches(ref, target_type or None, target_id) for ref in _as_list(value)):
                return True
        return False


def _filters(registry: SearchRegistry, res_type: str, params: Sequence[tuple[str, str]]) -> list[_Filter]:
    out = []
    for name, value in params:
        if name == "_id":
            out.append(_Filter(name, "id", "id", value))
            continue
        if ":" in name or "." in name:
            continue
        definition = registry.get(res_type, name)
        if definition is None or definition.type not in {"token", "reference"}:
            continue
        if len(definition.members) != 1:
            continue
        match = _SIMPLE.match(definition.members[0])
        if not match or match.group(1) != res_type:
            continue
        out.append(_Filter(name, definition.type, match.group(2), value))
    return out


@dataclass
class EntryChecker:
    query: SearchQuery
    registry: SearchRegistry = field(default_factory=SearchRegistry.default)

    def __post_init__(self) -> None:
        self.elements = patient_elements(self.registry, self.query.resource_type)
        self.filters = _filters(self.registry, self.query.resource_type, self.query.params)

    @property
    def rechecked(self) -> list[str]:
        """The names of the parameters this checker enforces again (for logs and tests)."""
        names = ["_type"]
        if self.query.patient is not None:
            names.append("patient")
        return names + [f.name for f in self.filters]

    def check(self, resource: Any) -> Problem | None:
        """None when the resource may be passed on, else why it is dropped."""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return Problem(ProblemCode.INVALID_ENTRY, "an entry without a resource")
        res_type, res_id = resource["resourceType"], resource.get("id")
        if not isinstance(res_id, str) or not _ID.fullmatch(res_id):
            return Problem(ProblemCode.INVALID_ENTRY, f"a {res_type} without a valid id")
        reference = f"{res_type}/{res_id}"
        if res_type != self.query.resource_type:
            return Problem(
                ProblemCode.WRONG_TYPE, f"{reference} is not a {self.query.resource_type}", reference
            )
        patient = self.query.patient
        if patient is not None and not self.about_patient(resource, patient):
            detail = f"{reference} is not about the patient asked for"
            return Problem(ProblemCode.OTHER_PATIENT, detail, reference)
        for one in self.filters:
            if not one.matches(resource):
                return Problem(
                    ProblemCode.NOT_MATCHING, f"{reference} does not match {one.name}={one.value}", reference
                )
        return None

    def about_patient(self, resource: dict[str, Any], patient: str) -> bool:
        if resource.get("resourceType") == "Patient":
            return resource.get("id") == patient
        return any(
            _reference_matches(ref, "Patient", patient)
            for element in self.elements
            for ref in _as_list(resource.get(element))
        )
