"""A patient's Consent resources compiled once into rules the engine checks with set lookups.

Each active Consent (scope patient-privacy) becomes a tree of `Rule`s mirroring its provisions: the base
provision and its nested exceptions, with every condition turned into a frozenset or a datetime range.
The consents are filed by who their base provision is about (one organisation, a category of them, or
anyone), so a decision looks only at the consents that can concern the requester.

Compiling needs no policy: data categories and labels stay `system|code` tokens, and the organisation
categories bare codes; the engine relates them to the request through the policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rzcp.consent.policy import PURPOSE_SYSTEM, URA_SYSTEM
from rzcp.fhir.search.values import parse_date_range

#: Consent.provision.actor.role codes (v3 ParticipationType) for the two sides of an exchange.
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RECIPIENT_ROLES = frozenset({"IRCP", "PRCP"})  # (primary) information recipient: who asks
CUSTODIAN_ROLES = frozenset({"CST"})  # custodian: the member that holds the data
SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY_SCOPE = "patient-privacy"

Range = tuple[datetime, datetime]

#: Equal condition sets shared between compiled consents: a registry of millions repeats a few values.
_INTERNED: dict[frozenset[str], frozenset[str]] = {}
_INTERN_LIMIT = 100_000


def _intern(values: frozenset[str]) -> frozenset[str]:
    found = _INTERNED.get(values)
    if found is not None:
        return found
    if len(_INTERNED) < _INTERN_LIMIT:
        _INTERNED[values] = values
    return values


class CompileError(ValueError):
    """A provision the engine cannot read; validation refuses such consents before they are stored."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One provision. A None condition does not restrict; a frozenset one matches when the request
    carries any of its values."""

    effect: str | None  # "permit" | "deny"; None only on a base provision without a type (treated as permit)
    path: str
    period: Range | None = None
    data_period: Range | None = None
    requester_orgs: frozenset[str] | None = None
    requester_categories: frozenset[str] | None = None
    source_orgs: frozenset[str] | None = None
    source_categories: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    classes: frozenset[str] | None = None
    codes: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    #: A condition the engine cannot evaluate (an actor of another role or kind): never matches.
    unmatchable: bool = False
    children: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class CompiledConsent:
    consent_id: str
    version: str | None
    effect: str  # the base provision's type
    root: Rule


@dataclass
class CompiledConsents:
    """A patient's active consents, filed by the requester their base provision names."""

    consents: tuple[CompiledConsent, ...] = ()
    by_org: dict[str, tuple[CompiledConsent, ...]] = field(default_factory=dict)
    by_category: dict[str, tuple[CompiledConsent, ...]] = field(default_factory=dict)
    anyone: tuple[CompiledConsent, ...] = ()
    #: Consents that took no part: (id, why), e.g. inactive or of another scope.
    skipped: tuple[tuple[str, str], ...] = ()

    def candidates(self, requester_ura: str, categories: Iterable[str]) -> tuple[CompiledConsent, ...]:
        found = self.anyone
        buckets = 1 if found else 0
        org = self.by_org.get(requester_ura)
        if org:
            found, buckets = found + org, buckets + 1
        if self.by_category:
            for code in categories:
                cat = self.by_category.get(code)
                if cat:
                    found, buckets = found + cat, buckets + 1
        # A consent naming several requesters sits in several buckets: count it once.
        return tuple(dict.fromkeys(found)) if buckets > 1 else found

    def __len__(self) -> int:
        return len(self.consents)


def compile_consents(resources: Iterable[Mapping[str, Any]]) -> CompiledConsents:
    """Compile a patient's Consent resources (as stored: with id and meta.versionId)."""
    compiled: list[CompiledConsent] = []
    skipped: list[tuple[str, str]] = []
    for resource in resources:
        consent_id = str(resource.get("id") or "?")
        why = _not_in_force(resource)
        if why is not None:
            skipped.append((consent_id, why))
            continue
        try:
            root = _rule(resource.get("provision") or {}, "Consent.provision", None)
        except CompileError as exc:
            skipped.append((consent_id, f"unreadable: {exc}"))
            continue
        version = (resource.get("meta") or {}).get("versionId")
        compiled.append(CompiledConsent(consent_id, version, root.effect or "permit", root))
    return _file(tuple(compiled), tuple(skipped))


def _not_in_force(resource: Mapping[str, Any]) -> str | None:
    status = resource.get("status")
    if status != "active":
        return f"status is {status!r}, not 'active'"
    codings = (resource.get("scope") or {}).get("coding") or []
    if not any(c.get("code") == PRIVACY_SCOPE for c in codings):
        return "scope is not patient-privacy"
    return None


def _file(consents: tuple[CompiledConsent, ...], skipped: tuple[tuple[str, str], ...]) -> CompiledConsents:
    by_org: dict[str, list[CompiledConsent]] = {}
    by_cat: dict[str, list[CompiledConsent]] = {}
    anyone: list[CompiledConsent] = []
    for consent in consents:
        root = consent.root
        if root.requester_orgs is None and root.requester_categories is None:
            anyone.append(consent)
            continue
        for ura in root.requester_orgs or ():
            by_org.setdefault(ura, []).append(consent)
        for code in root.requester_categories or ():
            by_cat.setdefault(code, []).append(consent)
    return CompiledConsents(
        consents=consents,
        by_org={k: tuple(v) for k, v in by_org.items()},
        by_category={k: tuple(v) for k, v in by_cat.items()},
        anyone=tuple(anyone),
        skipped=skipped,
    )


def _rule(provision: Mapping[str, Any], path: str, parent_effect: str | None) -> Rule:
    effect = provision.get("type")
    if effect not in (None, "permit", "deny"):
        raise CompileError(f"{path}.type {effect!r} is not permit or deny")
    if effect is None and parent_effect is not None:
        raise CompileError(f"{path}.type is required on a nested provision")
    actors = _actors(provision.get("actor") or [], path)
    children = tuple(
        _rule(child, f"{path}.provision[{i}]", effect or "permit")
        for i, child in enumerate(provision.get("provision") or [])
    )
    return Rule(
        effect=effect,
        path=path,
        period=_range(provision.get("period"), f"{path}.period"),
        data_period=_range(provision.get("dataPeriod"), f"{path}.dataPeriod"),
        requester_orgs=actors["requester_orgs"],
        requester_categories=actors["requester_categories"],
        source_orgs=actors["source_orgs"],
        source_categories=actors["source_categories"],
        purposes=_codes(provision.get("purpose"), bare=True, only_system=PURPOSE_SYSTEM),
        classes=_codes(provision.get("class")),
        codes=_codes([c for cc in provision.get("code") or [] for c in cc.get("coding") or []]),
        labels=_codes(provision.get("securityLabel")),
        unmatchable=bool(actors["unmatchable"]),
        children=children,
    )


def _actors(actors: list[Mapping[str, Any]], path: str) -> dict[str, Any]:
    found: dict[str, Any] = {
        "requester_orgs": None,
        "requester_categories": None,
        "source_orgs": None,
        "source_categories": None,
        "unmatchable": False,
    }
    for actor in actors:
        roles = {c.get("code") for c in (actor.get("role") or {}).get("coding") or []}
        side = "requester" if roles & RECIPIENT_ROLES else "source" if roles & CUSTODIAN_ROLES else None
        identifier = (actor.get("reference") or {}).get("identifier") or {}
        value = identifier.get("value")
        if side is None or not value:
            found["unmatchable"] = True
            continue
        kind = "orgs" if identifier.get("system") == URA_SYSTEM else "categories"
        key = f"{side}_{kind}"
        found[key] = _intern((found[key] or frozenset()) | {value})
    return found


def _codes(
    codings: list[Mapping[str, Any]] | None, *, bare: bool = False, only_system: str | None = None
) -> frozenset[str] | None:
    if not codings:
        return None
    out = set()
    for coding in codings:
        system, code = coding.get("system"), coding.get("code")
        if not code or (only_system is not None and system not in (None, only_system)):
            continue
        out.add(code if bare else f"{system}|{code}")
    return _intern(frozenset(out))


def _range(period: Mapping[str, Any] | None, path: str) -> Range | None:
    if not period:
        return None
    try:
        low = parse_date_range(period["start"])[0] if period.get("start") else datetime.min
        high = parse_date_range(period["end"])[1] if period.get("end") else datetime.max
    except (ValueError, TypeError, OverflowError):
        raise CompileError(f"{path} is not a valid Period") from None
    return low, high
