"""SMART on FHIR scopes, v1 and v2, as plain data: parse, narrow to what a client is registered for, and
answer `allows(scopes, resource_type, interaction)`.

    system/Patient.read       v1: read = r+s, write = c+u+d, * = all five
    system/*.write            any type
    system/Observation.rs     v2: letters from c r u d s, in that order
    patient/Consent.cruds     the patient's own Consents (the FHIR layer enforces "own")

Scopes that are not about resources (`openid`, `fhirUser`, `launch/patient`, `offline_access`) are kept as
they are and grant no FHIR access. v2 query suffixes (`?category=...`) are not supported and refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Context = Literal["patient", "user", "system"]

#: The FHIR interactions and the v2 permission letter each needs.
INTERACTION_PERMISSION = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "history-type": "s",
    "create": "c",
    "update": "u",
    "delete": "d",
}

_ORDER = "cruds"
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(_ORDER)}
_SCOPE = re.compile(r"(patient|user|system)/([A-Z][A-Za-z]{1,63}|\*)\.([a-z*]+)")
_OTHER = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"}
)


class ScopeError(ValueError):
    """A scope string that is not a SMART scope this server understands."""


@dataclass(frozen=True)
class Scope:
    context: Context
    resource_type: str  # a type or "*"
    permissions: frozenset[str]
    #: the scope as the client wrote it (v1 or v2), so that a granted scope is echoed in its own form
    written: str = field(default="", compare=False)

    def covers(self, other: Scope) -> bool:
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and other.permissions <= self.permissions
        )

    def intersect(self, other: Scope) -> Scope | None:
        """The part of `other` this scope allows, or None."""
        if self.context != other.context:
            return None
        if self.resource_type == "*":
            res_type = other.resource_type
        elif other.resource_type in ("*", self.resource_type):
            res_type = self.resource_type
        else:
            return None
        permissions = self.permissions & other.permissions
        return Scope(self.context, res_type, permissions) if permissions else None

    def __str__(self) -> str:
        if self.written:
            return self.written
        return f"{self.context}/{self.resource_type}.{''.join(c for c in _ORDER if c in self.permissions)}"


def parse_scope(text: str) -> Scope:
    match = _SCOPE.fullmatch(text)
    if match is None:
        raise ScopeError(f"{text!r} is not a SMART scope of the form context/Type.permissions")
    context, res_type, perms = match.groups()
    if perms in _V1:
        permissions = _V1[perms]
    elif perms and all(c in _ORDER for c in perms) and _in_order(perms):
        permissions = frozenset(perms)
    else:
        raise ScopeError(f"{text!r}: the permissions must be read, write, * or letters of 'cruds' in order")
    return Scope(context, res_type, permissions, text)  # type: ignore[arg-type]


def _in_order(perms: str) -> bool:
    positions = [_ORDER.index(c) for c in perms]
    return positions == sorted(set(positions))


@dataclass(frozen=True)
class ScopeSet:
    """What a token grants: resource scopes plus the other (non-resource) scopes, as given."""

    resource: tuple[Scope, ...] = ()
    other: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str], *, lenient: bool = False) -> ScopeSet:
        """Parse a space-separated scope string; `lenient` drops what it cannot parse instead of raising."""
        words = text.split() if isinstance(text, str) else list(text)
        resource: list[Scope] = []
        other: list[str] = []
        for word in words:
            if word in _OTHER:
                other.append(word)
                continue
            try:
                resource.append(parse_scope(word))
            except ScopeError:
                if not lenient:
                    raise
        return cls(tuple(dict.fromkeys(resource)), tuple(dict.fromkeys(other)))

    def __str__(self) -> str:
        return " ".join([*(str(s) for s in self.resource), *self.other])

    def __bool__(self) -> bool:
        return bool(self.resource or self.other)

    def contexts(self) -> set[str]:
        return {s.context for s in self.resource}

    def within(self, registered: ScopeSet) -> bool:
        """Whether every resource scope of this set (a token's) is covered by one of `registered`: a
        token granted before its client's scopes were narrowed is not, and is refused from then on."""
        return all(any(have.covers(want) for have in registered.resource) for want in self.resource)

    def narrow(self, requested: ScopeSet) -> ScopeSet:
        """The part of `requested` that this (registered) set allows; scopes outside it are dropped."""
        granted: list[Scope] = []
        for want in requested.resource:
            if any(have.covers(want) for have in self.resource):
                granted.append(want)
                continue
            for have in self.resource:
                part = have.intersect(want)
                if part is not None:
                    granted.append(part)
        allowed_other = tuple(o for o in requested.other if o in self.other)
        return ScopeSet(tuple(dict.fromkeys(granted)), allowed_other)


def allows(scopes: ScopeSet, resource_type: str, interaction: str, *, context: str | None = None) -> bool:
    """Whether the scopes permit `interaction` (a CapabilityStatement code) on `resource_type`."""
    needed = INTERACTION_PERMISSION.get(interaction)
    if needed is None:
        return False
    return any(
        needed in s.permissions
        and s.resource_type in ("*", resource_type)
        and (context is None or s.context == context)
        for s in scopes.resource
    )
