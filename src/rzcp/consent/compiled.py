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
from typing import Any, TypeVar

from rzcp.consent.labels import label_token
from rzcp.consent.policy import PURPOSE_SYSTEM, URA_SYSTEM
from rzcp.fhir.search.values import parse_date_range

#: Consent.provision.actor.role codes (v3 ParticipationType) for the two sides of an exchange.
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RECIPIENT_ROLES = frozenset({"IRCP", "PRCP"})  # (primary) information recipient: who asks
CUSTODIAN_ROLES = frozenset({"CST"})  # custodian: the member that holds the data
SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY_SCOPE = "patient-privacy"

Range = tuple[datetime, datetime]

#: Equal condition sets and period bounds shared between compiled consents: a registry of millions
#: repeats a few values, and a shared value stays in the CPU caches where a million copies would not.
_Shared = TypeVar("_Shared", frozenset[str], datetime)
_INTERNED: dict[frozenset[str] | datetime, Any] = {}
_INTERN_LIMIT = 100_000


def _intern(value: _Shared) -> _Shared:
    found = _INTERNED.get(value)
    if found is not None:
        return found  # type: ignore[no-any-return]
    if len(_INTERNED) < _INTERN_LIMIT:
        _INTERNED[value] = value
    return value


class CompileError(ValueError):
    """A provision the engine cannot read; validation refuses such consents before they are stored."""


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One provision. A None condition does not restrict; a frozenset one matches when the request
    carries any of its values. Compared by identity: the engine asks which provision decided."""

    effect: str | None  # "permit" | "deny"; None only on a nested provision without a type (an error)
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
class CompiledConsent(Rule):
    """A consent's base provision (its `effect` permit when the type is missing), with the consent's
    identity. One object, not a consent pointing to its base provision: in a large registry each object
    a decision reaches is likely a trip to memory."""

    consent_id: str = ""
    version: str | None = None
    #: Place among the patient's compiled consents: candidates from several index entries keep this order.
    position: int = 0

    @property
    def root(self) -> Rule:
        return self


@dataclass(frozen=True, slots=True, eq=False)
class CompiledConsents:
    """A patient's active consents, filed by the requester their base provision names.

    Built for a registry of millions of consents held in memory: most decisions meet a patient whose
    compiled consents are no longer in the CPU caches, and then every object a decision touches costs a
    trip to memory. So a decision touches this object, one small dict and one tuple to find the consents
    that can concern the requester (each entry already holds the consents about anyone), and only those.
    """

    consents: tuple[CompiledConsent, ...] = ()
    #: Requester key (a URA or an organisation-category code) -> the consents whose base provision names
    #: it, together with those about anyone, in consent order. A superset: the engine checks each base
    #: provision in full, so a category code that happened to equal a URA would cost time, not a decision.
    by_requester: Mapping[str, tuple[CompiledConsent, ...]] = field(default_factory=dict)
    #: The consents about anyone: the candidates when no key of the requester is filed.
    anyone: tuple[CompiledConsent, ...] = ()
    #: Consents that took no part: (id, why), e.g. inactive or of another scope.
    skipped: tuple[tuple[str, str], ...] = ()
    #: Every code token a provision (at any depth) names: of a resource's codes only these, and those the
    #: policy's data categories ask for, can change a decision (what a per-resource memo keys on).
    code_tokens: frozenset[str] = field(init=False)
    #: The distinct dataPeriods of the provisions (at any depth): a resource's clinical date matters only
    #: through which of them it falls in, and not at all when there are none.
    data_periods: tuple[Range, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Derived here, not passed in: whoever builds the object, the memo keys cannot miss a condition.
        codes, periods = _data_conditions(self.consents)
        object.__setattr__(self, "code_tokens", codes)
        object.__setattr__(self, "data_periods", periods)

    def candidates(self, requester_ura: str, categories: Iterable[str]) -> tuple[CompiledConsent, ...]:
        """The consents whose base provision can concern this requester, in consent order."""
        get = self.by_requester.get
        found = get(requester_ura)
        for code in categories:
            more = get(code)
            if more is not None and more is not found:
                found = more if found is None else _merge(found, more)
        return self.anyone if found is None else found

    def __len__(self) -> int:
        return len(self.consents)


def _data_conditions(rules: Iterable[Rule]) -> tuple[frozenset[str], tuple[Range, ...]]:
    codes: set[str] = set()
    periods: dict[Range, None] = {}
    stack = list(rules)
    while stack:
        rule = stack.pop()
        if rule.codes:
            codes.update(rule.codes)
        if rule.data_period is not None:
            periods[rule.data_period] = None
        stack.extend(rule.children)
    return _intern(frozenset(codes)), tuple(periods)


def _merge(a: tuple[CompiledConsent, ...], b: tuple[CompiledConsent, ...]) -> tuple[CompiledConsent, ...]:
    """Two index entries as one, each consent once (a consent may name several requesters, and the
    consents about anyone are in both), in consent order."""
    return tuple(sorted({*a, *b}, key=_position))


def _position(consent: CompiledConsent) -> int:
    return consent.position


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
            fields = _rule_fields(resource.get("provision") or {}, "Consent.provision", None)
        except CompileError as exc:
            skipped.append((consent_id, f"unreadable: {exc}"))
            continue
        fields["effect"] = fields["effect"] or "permit"
        version = (resource.get("meta") or {}).get("versionId")
        compiled.append(
            CompiledConsent(**fields, consent_id=consent_id, version=version, position=len(compiled))
        )
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
    named: dict[str, list[CompiledConsent]] = {}
    anyone: list[CompiledConsent] = []
    for consent in consents:
        if consent.requester_orgs is None and consent.requester_categories is None:
            anyone.append(consent)
            for entry in named.values():
                entry.append(consent)
            continue
        for key in (consent.requester_orgs or frozenset()) | (consent.requester_categories or frozenset()):
            named.setdefault(key, list(anyone)).append(consent)
    return CompiledConsents(
        consents=consents,
        by_requester={key: tuple(entry) for key, entry in named.items()},
        anyone=tuple(anyone),
        skipped=skipped,
    )


def _rule(provision: Mapping[str, Any], path: str, parent_effect: str | None) -> Rule:
    return Rule(**_rule_fields(provision, path, parent_effect))


def _rule_fields(provision: Mapping[str, Any], path: str, parent_effect: str | None) -> dict[str, Any]:
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
    return dict(
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
        labels=_label_tokens(provision.get("securityLabel")),
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


def _label_tokens(codings: list[Mapping[str, Any]] | None) -> frozenset[str] | None:
    if not codings:
        return None
    return _intern(frozenset(label_token(c.get("system"), c["code"]) for c in codings if c.get("code")))


def _range(period: Mapping[str, Any] | None, path: str) -> Range | None:
    if not period:
        return None
    try:
        low = parse_date_range(period["start"])[0] if period.get("start") else datetime.min
        high = parse_date_range(period["end"])[1] if period.get("end") else datetime.max
    except (ValueError, TypeError, OverflowError):
        raise CompileError(f"{path} is not a valid Period") from None
    return _intern(low), _intern(high)
