"""The region's consent policy: read from `consent/policy.yaml`, validated once at start-up.

The file is data a privacy officer reviews (see its comments); this module turns it into a `Policy` with
the lookups the engine needs precomputed: which data categories a resource falls in, which category an
organisation type belongs to, which purposes a consent's purpose covers. A file that does not validate
stops the start-up with `PolicyError`: one line naming the file, the field and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rzcp.consent.labels import label_token
from rzcp.fhir.search.definitions import R4_MODEL

#: The repository's own policy, used when settings name none.
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[3] / "consent" / "policy.yaml"

#: Where the types of R4 resources come from (the search registry's model of R4).
R4_RESOURCE_TYPES = frozenset(
    t
    for t, parent in R4_MODEL["type2Parent"].items()
    if parent in {"DomainResource", "Resource"} and t != "DomainResource"
)

#: Consent.provision.class with this system names a resource type.
RESOURCE_TYPE_SYSTEM = "http://hl7.org/fhir/resource-types"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
URA_SYSTEM = "http://fhir.nl/fhir/NamingSystem/ura"


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message is one line naming the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrganisationCategory(_Strict):
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    types: list[str] = Field(default_factory=list)


class OrganisationCategories(_Strict):
    system: str = Field(min_length=1)
    national_type_system: str = Field(min_length=1)
    entries: list[OrganisationCategory] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> OrganisationCategories:
        _no_duplicates([e.code for e in self.entries], "code")
        _no_duplicates([t for e in self.entries for t in e.types], "types")
        return self


class Coverage(_Strict):
    resource: str
    #: `system|code` of the resource's category; any of them suffices. None: every resource of the type.
    category: list[str] | None = None

    @field_validator("resource")
    @classmethod
    def _r4_type(cls, value: str) -> str:
        if value not in R4_RESOURCE_TYPES:
            raise ValueError(f"{value!r} is not an R4 resource type")
        return value

    @field_validator("category")
    @classmethod
    def _tokens(cls, value: list[str] | None) -> list[str] | None:
        for token in value or ():
            _token(token)
        return value


class DataCategory(_Strict):
    key: str = Field(min_length=1)
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    general: bool = False
    covers: list[Coverage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _covers_something(self) -> DataCategory:
        if self.general and self.covers:
            raise ValueError("a general category covers everything: leave `covers` out")
        if not self.general and not self.covers:
            raise ValueError("`covers` must name at least one resource type (or set general: true)")
        return self

    @property
    def token(self) -> str:
        return f"{self.system}|{self.code}"


class SensitiveLabel(_Strict):
    label: str
    name: str = Field(min_length=1)

    @field_validator("label")
    @classmethod
    def _token(cls, value: str) -> str:
        return _token(value)


class Purpose(_Strict):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_-]*$")
    name: str = Field(min_length=1)
    within: str | None = None


class Emergency(_Strict):
    enabled: bool = False
    duration_minutes: int = Field(default=240, ge=1, le=7 * 24 * 60)
    data_categories: list[str] = Field(default_factory=list)
    #: The organisation categories whose members may break the glass; absent: every category.
    requester_categories: list[str] | None = None
    respect_refusals: bool = True
    include_sensitive: bool = False


class PolicyDocument(_Strict):
    version: Literal[1]
    default_decision: Literal["deny"]
    organisation_categories: OrganisationCategories
    data_categories: list[DataCategory] = Field(min_length=1)
    sensitive_labels: list[SensitiveLabel] = Field(default_factory=list)
    purposes: list[Purpose] = Field(min_length=1)
    emergency: Emergency = Field(default_factory=Emergency)

    @model_validator(mode="after")
    def _references(self) -> PolicyDocument:
        _no_duplicates([c.key for c in self.data_categories], "data_categories.key")
        _no_duplicates([c.token for c in self.data_categories], "data_categories.code")
        codes = [p.code for p in self.purposes]
        _no_duplicates(codes, "purposes.code")
        for purpose in self.purposes:
            if purpose.within is not None and purpose.within not in codes:
                raise ValueError(f"purposes: {purpose.code}.within names unknown purpose {purpose.within!r}")
        _no_cycles({p.code: p.within for p in self.purposes})
        keys = {c.key for c in self.data_categories}
        for key in self.emergency.data_categories:
            if key not in keys:
                raise ValueError(f"emergency.data_categories: {key!r} is not a data category key")
        categories = {e.code for e in self.organisation_categories.entries}
        for code in self.emergency.requester_categories or ():
            if code not in categories:
                raise ValueError(
                    f"emergency.requester_categories: {code!r} is not an organisation category code"
                )
        if self.emergency.enabled and "ETREAT" not in codes:
            raise ValueError("emergency.enabled: the purposes must list ETREAT to switch the rule on")
        return self


def _token(value: str) -> str:
    system, sep, code = value.partition("|")
    if not sep or not system or not code:
        raise ValueError(f"{value!r} is not of the form system|code")
    return value


def _no_duplicates(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what}: {value!r} appears twice")
        seen.add(value)


def _no_cycles(within: dict[str, str | None]) -> None:
    for start in within:
        seen, current = {start}, within[start]
        while current is not None:
            if current in seen:
                raise ValueError(f"purposes: {start}.within makes a cycle")
            seen.add(current)
            current = within.get(current)


@dataclass(frozen=True)
class ResourceCategories:
    """The data categories a resource falls in: `sure` from what is known of it, `maybe` those that
    depend on category codes not known yet (a question asked before the data comes back)."""

    sure: frozenset[str]
    maybe: frozenset[str]


@dataclass(frozen=True)
class Policy:
    """The validated policy with its lookups. Data categories are named by their `system|code` token,
    as they appear in Consent.provision.class."""

    document: PolicyDocument
    source: str = "<memory>"
    _category_cache: dict[tuple[str, frozenset[str] | None], ResourceCategories] = field(
        default_factory=dict, repr=False, compare=False
    )
    _codes_cache: dict[str | None, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)
    _chain_cache: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)

    # --- organisations ---------------------------------------------------------------------------------
    @cached_property
    def category_system(self) -> str:
        return self.document.organisation_categories.system

    @cached_property
    def national_type_system(self) -> str:
        return self.document.organisation_categories.national_type_system

    @cached_property
    def organisation_categories(self) -> frozenset[str]:
        return frozenset(e.code for e in self.document.organisation_categories.entries)

    @cached_property
    def _category_of_type(self) -> dict[str, str]:
        return {t: e.code for e in self.document.organisation_categories.entries for t in e.types}

    def knows_category(self, code: str) -> bool:
        """Whether a member may be registered as `code`: a category of the region's or a national
        organisation type that falls in one (consents name organisations by these)."""
        return code in self.organisation_categories or code in self._category_of_type

    def category_codes(self, category: str | None) -> frozenset[str]:
        """What a member registered as `category` (a category code or a national type code) matches:
        its category and, when given as a type, that type too."""
        found = self._codes_cache.get(category)
        if found is not None:
            return found
        if category is None:
            found = frozenset()
        elif category in self.organisation_categories:
            found = frozenset({category})
        else:
            parent = self._category_of_type.get(category)
            found = frozenset({category, parent}) if parent else frozenset({category})
        if len(self._codes_cache) < 1_000:
            self._codes_cache[category] = found
        return found

    def is_known_category(self, code: str) -> bool:
        return code in self.organisation_categories or code in self._category_of_type

    # --- data ------------------------------------------------------------------------------------------
    @cached_property
    def data_tokens(self) -> frozenset[str]:
        return frozenset(c.token for c in self.document.data_categories)

    @cached_property
    def general_tokens(self) -> frozenset[str]:
        return frozenset(c.token for c in self.document.data_categories if c.general)

    @cached_property
    def token_by_key(self) -> dict[str, str]:
        return {c.key: c.token for c in self.document.data_categories}

    @cached_property
    def name_by_token(self) -> dict[str, str]:
        return {c.token: c.name for c in self.document.data_categories}

    @cached_property
    def _coverage(self) -> dict[str, list[tuple[str, frozenset[str] | None]]]:
        by_type: dict[str, list[tuple[str, frozenset[str] | None]]] = {}
        for cat in self.document.data_categories:
            for cover in cat.covers:
                codes = frozenset(cover.category) if cover.category is not None else None
                by_type.setdefault(cover.resource, []).append((cat.token, codes))
        return by_type

    def categories_of(self, resource_type: str, codes: frozenset[str] | None) -> ResourceCategories:
        """The data-category tokens a resource of `resource_type` with these category/code tokens falls
        in, general categories and `resource-types|<type>` included. `codes` None: not known yet."""
        key = (resource_type, codes)
        found = self._category_cache.get(key)
        if found is not None:
            return found
        sure = set(self.general_tokens)
        sure.add(f"{RESOURCE_TYPE_SYSTEM}|{resource_type}")
        maybe: set[str] = set()
        for token, required in self._coverage.get(resource_type, ()):
            if required is None:
                sure.add(token)
            elif codes is None:
                maybe.add(token)
            elif required & codes:
                sure.add(token)
        found = ResourceCategories(frozenset(sure), frozenset(maybe - sure))
        if len(self._category_cache) < 10_000:
            self._category_cache[key] = found
        return found

    def data_categories_of_type(self, resource_type: str) -> frozenset[str]:
        """The data categories (tokens) that cover some resources of this type, whatever their codes."""
        return frozenset(token for token, _ in self._coverage.get(resource_type, ()))

    def category_tokens_for(self, resource_type: str) -> frozenset[str]:
        """The category tokens some data category asks a resource of this type to carry: any other code
        of the resource leaves `categories_of` unchanged, so a per-resource memo may drop it."""
        required = (codes for _, codes in self._coverage.get(resource_type, ()) if codes is not None)
        return frozenset().union(*required)

    # --- labels and purposes ---------------------------------------------------------------------------
    @cached_property
    def sensitive_labels(self) -> frozenset[str]:
        return frozenset(label_token(*s.label.split("|", 1)) for s in self.document.sensitive_labels)

    @cached_property
    def _sensitive_by_code(self) -> dict[str, frozenset[str]]:
        """For each sensitive label's code (blanks stripped, in capitals), the labels with that code."""
        by_code: dict[str, set[str]] = {}
        for token in self.sensitive_labels:
            by_code.setdefault(token.split("|", 1)[1].strip().upper(), set()).add(token)
        return {code: frozenset(tokens) for code, tokens in by_code.items()}

    def sensitive_among(self, labels: frozenset[str]) -> frozenset[str]:
        """The sensitive labels these labels (`label_token`s) amount to. A label with a sensitive label's
        code, blanks and capitals aside (` psy`), counts as that label under its own system, and under a
        system the policy's labels do not use as every label with the code (`http://example.org/x|PSY`):
        fail closed, the patient's permission must name it (a review let `psy` through)."""
        found = labels & self.sensitive_labels
        by_code = self._sensitive_by_code
        for token in labels - found:
            system, _, code = token.partition("|")
            candidates = by_code.get(code.strip().upper())
            if candidates:
                same_system = {t for t in candidates if t.startswith(f"{system}|")}
                found |= same_system or (frozenset() if system in self._sensitive_systems else candidates)
        return found

    @cached_property
    def _sensitive_systems(self) -> frozenset[str]:
        return frozenset(token.split("|", 1)[0] for token in self.sensitive_labels)

    @cached_property
    def purposes(self) -> frozenset[str]:
        return frozenset(p.code for p in self.document.purposes)

    @cached_property
    def _purpose_parents(self) -> dict[str, str | None]:
        return {p.code: p.within for p in self.document.purposes}

    def purpose_chain(self, purpose: str) -> frozenset[str]:
        """The purpose and every broader one it lies within: what a consent's purpose must be one of."""
        found = self._chain_cache.get(purpose)
        if found is not None:
            return found
        chain, current = set(), purpose
        while current is not None and current not in chain:
            chain.add(current)
            current = self._purpose_parents.get(current)
        found = frozenset(chain)
        if len(self._chain_cache) < 1_000:
            self._chain_cache[purpose] = found
        return found

    @cached_property
    def emergency(self) -> Emergency:
        return self.document.emergency

    def may_break_glass(self, category: str | None) -> bool:
        """Whether a member registered as `category` may break the glass under the emergency rule (a
        region can keep it to, say, hospitals and GP posts: an administrator's walkthrough found a
        pharmacy breaking it with the reason "curious")."""
        allowed = self.document.emergency.requester_categories
        return allowed is None or not self.category_codes(category).isdisjoint(allowed)

    @cached_property
    def emergency_tokens(self) -> frozenset[str]:
        return frozenset(self.token_by_key[k] for k in self.document.emergency.data_categories)


def parse_policy(data: Any, *, source: str = "<memory>") -> Policy:
    """A `Policy` from the parsed YAML; `PolicyError` (one line) when it does not validate."""
    try:
        return Policy(PolicyDocument.model_validate(data), source=source)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise PolicyError(f"{source}: {where}: {message}") from None


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and validate the policy file (the repository's consent/policy.yaml by default)."""
    file = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        hint = ""
        if path is None:  # an installed package carries no policy: only a checkout of the repository has one
            hint = (
                "; set RZCP_CONSENT_POLICY_PATH to the region's policy.yaml (as in the repository's consent/)"
            )
        raise PolicyError(f"{file}: cannot read the consent policy ({exc.strerror or exc}){hint}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(unknown line)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PolicyError(f"{file}: {where}: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{file}: (top level): the policy must be a mapping of fields")
    return parse_policy(data, source=str(file))
