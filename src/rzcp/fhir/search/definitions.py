"""The R4 search parameters, per resource type, from the official SearchParameter bundle.

Each official definition serves many base types with one union expression ("Condition.code |
(DeviceRequest.code as CodeableConcept) | Observation.code"). A `SearchParamDef` is one (code, base) pair
holding only the union members of its base, so the indexer evaluates nothing that cannot match, and a
compiled form of each member made once and cached.

Most members are plain paths ("Observation.code", "(Observation.value as Quantity)",
"Patient.telecom.where(system='phone')"); those compile to a list of steps the indexer walks over the dict
with the R4 model's types, about ten times faster than the FHIRPath engine. The rest go to fhirpathpy.
`.where(resolve() is Patient)` cannot be evaluated without a server, so it is taken off the expression and
kept as a filter on the reference's type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources as importlib_resources
from types import MappingProxyType
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as _fhirpath_models

R4_MODEL: dict[str, Any] = _fhirpath_models["r4"]

#: Parameters answered from columns of the `resources` table, not from an index table.
COLUMN_PARAMS = {"_id": "res_id", "_lastUpdated": "last_updated"}

#: Resource-level parameters we index (besides the column ones); _text, _content, _query, _list are not.
RESOURCE_LEVEL = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")

SUPPORTED_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri"})

_RESOLVE_RE = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)$")
_AS_RE = re.compile(
    r"^(?P<path>.+?)(?:\s+as\s+(?P<t1>[A-Za-z]+)|\.as\((?P<t2>[A-Za-z]+)\)|\.ofType\((?P<t3>[A-Za-z]+)\))$"
)
_STEP_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\.where\(\s*([A-Za-z]+)\s*=\s*'([^'\\]*)'\s*\))?")
_PATH_RE = re.compile(rf"{_STEP_RE.pattern}(?:\.{_STEP_RE.pattern})*")


def split_union(expression: str) -> list[str]:
    """The members of a top-level FHIRPath union, minding parentheses and quoted strings."""
    members: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            members.append(expression[start:i].strip())
            start = i + 1
        i += 1
    members.append(expression[start:].strip())
    return [m for m in members if m]


def _strip_parens(text: str) -> str:
    """ "(a as B)" -> "a as B", but only when the outer parentheses enclose the whole text."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def _member_root(member: str) -> str:
    m = re.match(r"[A-Za-z]+", _strip_parens(member))
    return m.group(0) if m else ""


@dataclass(frozen=True)
class Step:
    """One element name of a plain path, optionally filtered by `.where(field='literal')`."""

    name: str
    where_field: str | None = None
    where_value: str | None = None


@dataclass(frozen=True)
class CompiledPath:
    """One union member, ready to evaluate.

    Either `steps` (a plain path below `root`, walked by the indexer) or `function` (fhirpathpy) is set.
    `as_type` keeps only values of that FHIR type; `resolve_type` only references to that resource type.
    """

    text: str
    root: str
    steps: tuple[Step, ...] | None = None
    function: Callable[..., list[Any]] | None = None
    as_type: str | None = None
    resolve_type: str | None = None


def compile_member(member: str) -> CompiledPath:
    """Compile one union member; raises on an expression fhirpathpy cannot parse."""
    text = _strip_parens(member)
    resolve_type = None
    m = _RESOLVE_RE.search(text)
    if m:
        resolve_type = m.group(1)
        text = text[: m.start()]
    as_type = None
    m = _AS_RE.match(text)
    if m and _PATH_RE.fullmatch(m.group("path")):
        as_type = m.group("t1") or m.group("t2") or m.group("t3")
        text = m.group("path")
    if _PATH_RE.fullmatch(text):
        parts = [Step(*s) if s[1] else Step(s[0]) for s in _STEP_RE.findall(text)]
        return CompiledPath(member, parts[0].name, tuple(parts[1:]), None, as_type, resolve_type)
    if as_type:  # not a plain path after all: give fhirpathpy the whole member back
        text = f"{text} as {as_type}"
        as_type = None
    function = fhirpathpy.compile(text, R4_MODEL)
    return CompiledPath(member, _member_root(text), None, function, None, resolve_type)


@dataclass(frozen=True)
class SearchParamDef:
    """One search parameter of one resource type.

    `expression` holds only the union members that apply to `base`; `compiled` is made on first use.
    `column` names the `resources` column for _id and _lastUpdated. `supported` is False for composite and
    special parameters and for those without an expression: the parser reports them as not supported.
    """

    code: str
    type: str
    base: str
    expression: str | None
    targets: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    url: str = ""
    column: str | None = None
    members: tuple[str, ...] = field(default=(), repr=False)

    @property
    def supported(self) -> bool:
        return self.type in SUPPORTED_TYPES and (self.column is not None or bool(self.members))

    @cached_property
    def compiled(self) -> tuple[CompiledPath, ...]:
        """The compiled members; a member fhirpathpy cannot parse is left out (it would never match)."""
        out = []
        for member in self.members:
            try:
                out.append(compile_member(member))
            except Exception:  # noqa: S112 - a broken official expression must not break the registry
                continue
        return tuple(out)


def _resource_types() -> frozenset[str]:
    parents = R4_MODEL["type2Parent"]
    return frozenset(
        t for t, p in parents.items() if p in {"DomainResource", "Resource"} and t != "DomainResource"
    )


class SearchRegistry:
    """All search parameters by resource type and code."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._types = _resource_types()
        by_type: dict[str, dict[str, SearchParamDef]] = {t: {} for t in self._types}
        for entry in entries:
            sp = entry.get("resource", entry)
            code, bases = sp.get("code"), sp.get("base", [])
            if not code:
                continue
            if "Resource" in bases or "DomainResource" in bases:
                if code not in RESOURCE_LEVEL:
                    continue
                for res_type in self._types:
                    by_type[res_type][code] = self._make(sp, res_type, resource_level=True)
                continue
            for base in bases:
                if base in by_type:
                    by_type[base][code] = self._make(sp, base, resource_level=False)
        self._by_type = {t: MappingProxyType(p) for t, p in by_type.items()}

    @staticmethod
    def _make(sp: dict[str, Any], base: str, *, resource_level: bool) -> SearchParamDef:
        expression = sp.get("expression")
        members: list[str] = []
        if expression and sp["code"] not in COLUMN_PARAMS:
            all_members = split_union(expression)
            if resource_level:
                members = [re.sub(r"^Resource\.", f"{base}.", m) for m in all_members]
            else:
                members = [m for m in all_members if _member_root(m) == base] or all_members
                # A few official expressions leave the type off ("name | alias" for InsurancePlan).
                members = [m if _member_root(m)[:1].isupper() else f"{base}.{m}" for m in members]
        return SearchParamDef(
            code=sp["code"],
            type=sp.get("type", ""),
            base=base,
            expression=" | ".join(members) or expression,
            targets=tuple(sp.get("target", ())),
            modifiers=tuple(sp.get("modifier", ())),
            comparators=tuple(sp.get("comparator", ())),
            url=sp.get("url", ""),
            column=COLUMN_PARAMS.get(sp["code"]),
            members=tuple(members),
        )

    @classmethod
    @cache
    def default(cls) -> SearchRegistry:
        """The official R4 parameters, loaded once per process."""
        data = importlib_resources.files("rzcp.fhir.search").joinpath("search-parameters.json").read_bytes()
        return cls(json.loads(data)["entry"])

    def resource_types(self) -> frozenset[str]:
        return self._types

    def params_for(self, res_type: str) -> Mapping[str, SearchParamDef]:
        """The parameters of a resource type, Resource-level ones included; empty for an unknown type."""
        return self._by_type.get(res_type, MappingProxyType({}))

    def get(self, res_type: str, code: str) -> SearchParamDef | None:
        return self.params_for(res_type).get(code)
