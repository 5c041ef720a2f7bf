"""Parse FHIR search parameters into a typed `SearchQuery` the store turns into SQL.

Every bad value becomes `InvalidSearch` naming the parameter; nothing else may escape, because the query
string is the least trusted input the gateway has. What we do not support is refused in strict mode
(handling=strict) and ignored with a warning otherwise, as the spec asks. The numbers of parameters and of
OR values are capped so that no query can build an unbounded SQL statement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rzcp.errors import InvalidSearch, Issue
from rzcp.fhir.search.definitions import SearchParamDef, SearchRegistry
from rzcp.fhir.search.values import decimal_range, normalize_string, parse_date_range, parse_reference

MAX_PARAMS = 50
MAX_OR_VALUES = 50
#: A sort is evaluated per resource and key (a pull's by the gateway itself, on every page).
MAX_SORT_KEYS = 8

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
SUMMARY_VALUES = frozenset({"count", "true", "false", "text", "data"})
TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
IGNORED = frozenset({"_format", "_pretty", "_page"})
SORTABLE = frozenset({"string", "token", "date", "number", "quantity"})

_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "not", "text", "of-type"}),
    "reference": frozenset({"missing", "identifier"}),
    "uri": frozenset({"missing", "below", "above"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
}


@dataclass(frozen=True)
class TokenValue:
    """`system|code`, `|code` (no_system), `system|` (code None) or `code` (system None)."""

    system: str | None
    code: str | None
    no_system: bool = False


@dataclass(frozen=True)
class OfTypeValue:
    """`:of-type` value `type-system|type-code|identifier-value`."""

    type_system: str
    type_code: str
    value: str


@dataclass(frozen=True)
class StringValue:
    """A string as given (for :exact) and normalised (default and :contains, and token :text)."""

    exact: str
    norm: str


@dataclass(frozen=True)
class DateValue:
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class NumberValue:
    """A number or quantity: `low`/`high` the interval its precision implies; units only for quantity."""

    prefix: str
    value: float
    low: float
    high: float
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class ReferenceValue:
    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True)
class UriValue:
    value: str


SearchValue = TokenValue | OfTypeValue | StringValue | DateValue | NumberValue | ReferenceValue | UriValue


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: its values are ORed; a query's criteria are ANDed.

    `missing` is set (and `values` empty) for `:missing=true|false`.
    """

    param: SearchParamDef
    modifier: str | None
    values: tuple[SearchValue, ...] = ()
    missing: bool | None = None


@dataclass(frozen=True)
class SortKey:
    param: SearchParamDef
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """`_include=source_type:param[:target_type]` or `_revinclude` with the same shape."""

    source_type: str
    param: SearchParamDef
    target_type: str | None = None


@dataclass(frozen=True)
class SearchQuery:
    res_type: str
    criteria: tuple[Criterion, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    summary: str | None = None
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    total: str | None = None
    warnings: tuple[Issue, ...] = field(default=(), compare=False)


# --- helpers ------------------------------------------------------------------------------------------


#: Characters below U+0020: no FHIR string holds them (tab, CR and LF are no part of a search value).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash; escapes are kept for the next split."""
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", text)


def _bad(name: str, why: str) -> InvalidSearch:
    return InvalidSearch(f"Invalid value for search parameter '{name}': {why}", code="invalid")


def _split_prefix(name: str, raw: str) -> tuple[str, str]:
    if len(raw) >= 2 and raw[:2].isalpha():
        if raw[:2] not in PREFIXES:
            raise _bad(name, f"unknown prefix '{raw[:2]}'")
        return raw[:2], raw[2:]
    return "eq", raw


class _Parser:
    def __init__(self, res_type: str, registry: SearchRegistry, strict: bool) -> None:
        self.res_type = res_type
        self.registry = registry
        self.strict = strict
        self.warnings: list[Issue] = []

    def unsupported(self, name: str, why: str = "is not supported") -> None:
        if self.strict:
            raise InvalidSearch(f"Parameter '{name}' {why}", code="not-supported")
        self.warnings.append(Issue("warning", "not-supported", f"Parameter '{name}' {why} and was ignored"))

    # values of one criterion

    def value(self, param: SearchParamDef, modifier: str | None, name: str, raw: str) -> SearchValue:
        kind = param.type
        if param.code == "_id":
            text = unescape(raw)
            if not text:
                raise _bad(name, "empty id")
            return TokenValue(None, text)
        if not raw:
            raise _bad(name, "empty value")
        if kind == "token":
            return self.token(name, modifier, raw)
        if kind == "string":
            text = unescape(raw)
            return StringValue(text, normalize_string(text))
        if kind == "date":
            prefix, rest = _split_prefix(name, raw)
            try:
                low, high = parse_date_range(unescape(rest))
            except ValueError:
                raise _bad(name, "not a FHIR date") from None
            return DateValue(prefix, low, high)
        if kind in ("number", "quantity"):
            return self.number(name, kind, raw)
        if kind == "reference":
            return self.reference(name, param, modifier, raw)
        return UriValue(unescape(raw))

    def token(self, name: str, modifier: str | None, raw: str) -> SearchValue:
        if modifier == "text":
            text = unescape(raw)
            return StringValue(text, normalize_string(text))
        parts = [unescape(p) for p in split_escaped(raw, "|")]
        if modifier == "of-type":
            if len(parts) != 3 or not all(parts):
                raise _bad(name, "expected type-system|type-code|value")
            return OfTypeValue(*parts)
        if len(parts) == 1:
            return TokenValue(None, parts[0])
        if len(parts) != 2 or (not parts[0] and not parts[1]):
            raise _bad(name, "expected [system]|[code]")
        system, code = parts
        if not system:
            return TokenValue(None, code, no_system=True)
        return TokenValue(system, code or None)

    def number(self, name: str, kind: str, raw: str) -> NumberValue:
        prefix, rest = _split_prefix(name, raw)
        parts = [unescape(p) for p in split_escaped(rest, "|")]
        if kind == "number" and len(parts) != 1:
            raise _bad(name, "not a number")
        if len(parts) not in (1, 3):
            raise _bad(name, "expected number|system|code")
        try:
            value, low, high = decimal_range(parts[0])
        except ValueError:
            raise _bad(name, "not a number") from None
        system = parts[1] if len(parts) == 3 and parts[1] else None
        code = parts[2] if len(parts) == 3 and parts[2] else None
        if system and not code:
            raise _bad(name, "a system needs a code")
        return NumberValue(prefix, value, low, high, system, code)

    def reference(self, name: str, param: SearchParamDef, modifier: str | None, raw: str) -> SearchValue:
        text = unescape(raw)
        if modifier == "identifier":
            token = self.token(name, None, raw)
            assert isinstance(token, TokenValue)
            return token
        if "/" not in text and ":" not in text:
            target_type = modifier if modifier else (param.targets[0] if len(param.targets) == 1 else None)
            return ReferenceValue(target_type, text, None)
        parsed = parse_reference(text)
        if parsed is None:
            raise _bad(name, "not a reference")
        target_type, target_id, url = parsed
        if url is not None:
            if "://" not in url and not url.startswith(("urn:uuid:", "urn:oid:")):
                raise _bad(name, "not a reference")
            return ReferenceValue(None, None, url)
        if modifier and target_type != modifier:
            raise _bad(name, f"type does not match :{modifier}")
        return ReferenceValue(target_type, target_id, None)

    # one name=value pair

    def criterion(self, name: str, raw: str) -> Criterion | None:
        code, _, modifier = name.partition(":")
        param = self.registry.get(self.res_type, code)
        if "." in code or code == "_has" or param is None:
            self.unsupported(name, "is not supported" if param is None else "is not supported (chaining)")
            return None
        if not param.supported:
            self.unsupported(name, f"of type {param.type} is not supported")
            return None
        mod = modifier or None
        if mod is not None and not self.modifier_ok(param, mod):
            self.unsupported(name, f"modifier ':{mod}' is not supported")
            return None
        if mod == "missing":
            if raw not in ("true", "false"):
                raise _bad(name, "expected true or false")
            if param.column is not None:
                self.unsupported(name, "modifier ':missing' is not supported")
                return None
            return Criterion(param, mod, (), raw == "true")
        alternatives = split_escaped(raw, ",")
        if len(alternatives) > MAX_OR_VALUES:
            raise InvalidSearch(f"Too many values for search parameter '{name}' (at most {MAX_OR_VALUES})")
        values = tuple(self.value(param, mod, name, alt) for alt in alternatives)
        return Criterion(param, mod, values)

    def modifier_ok(self, param: SearchParamDef, modifier: str) -> bool:
        if param.column is not None:
            return param.code == "_id" and modifier == "not"
        if param.type == "reference" and modifier in self.registry.resource_types():
            return not param.targets or modifier in param.targets
        return modifier in _MODIFIERS.get(param.type, frozenset())

    # result parameters

    def sort(self, raw: str) -> list[SortKey]:
        keys = []
        items = raw.split(",")
        if len(items) > MAX_SORT_KEYS:
            raise InvalidSearch(f"Too many sort keys in '_sort' (at most {MAX_SORT_KEYS})")
        for item in items:
            item = item.strip()
            descending = item.startswith("-")
            code = item[1:] if descending else item
            param = self.registry.get(self.res_type, code)
            if param is None or not (param.column or (param.supported and param.type in SORTABLE)):
                self.unsupported(f"_sort={code}", "cannot be used to sort")
                continue
            keys.append(SortKey(param, descending))
        return keys

    def include(self, name: str, raw: str, reverse: bool) -> Include | None:
        if name not in ("_include", "_revinclude"):  # _include:iterate and friends
            self.unsupported(name)
            return None
        if raw == "*" or raw.endswith(":*"):
            self.unsupported(f"{name}={raw}", "(wildcard) is not supported")
            return None
        parts = raw.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise _bad(name, "expected Type:param[:TargetType]")
        source_type, code = parts[0], parts[1]
        target_type = parts[2] if len(parts) == 3 else None
        types = self.registry.resource_types()
        if source_type not in types or (target_type is not None and target_type not in types):
            raise _bad(name, "unknown resource type")
        if not reverse and source_type != self.res_type:
            self.unsupported(f"{name}={raw}", "does not start from the searched type")
            return None
        param = self.registry.get(source_type, code)
        if param is None or param.type != "reference" or not param.supported:
            self.unsupported(f"{name}={raw}", "is not a supported reference parameter")
            return None
        if reverse and target_type is not None and target_type != self.res_type:
            return None  # cannot reference what we are searching: includes nothing
        return Include(source_type, param, target_type)


def _count(raw: str, max_count: int) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise _bad("_count", "expected a non-negative integer")
    return min(int(raw), max_count)


def parse_search(
    res_type: str,
    params: Sequence[tuple[str, str]],
    registry: SearchRegistry,
    *,
    strict: bool,
    default_count: int,
    max_count: int,
) -> SearchQuery:
    """Parse the (name, value) pairs of a search on `res_type`; raises InvalidSearch only."""
    for name, value in params:
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise InvalidSearch(f"parameter {name[:50]!r} holds a control character", code="value")
    if res_type not in registry.resource_types():
        raise InvalidSearch(f"Unknown resource type '{res_type}'", code="not-supported")
    relevant = [(n, v) for n, v in params if n not in IGNORED]
    if len(relevant) > MAX_PARAMS:
        raise InvalidSearch(f"Too many search parameters (at most {MAX_PARAMS})")
    p = _Parser(res_type, registry, strict)
    criteria: list[Criterion] = []
    sort: list[SortKey] = []
    includes: list[Include] = []
    revincludes: list[Include] = []
    elements: list[str] = []
    count, summary, total = min(default_count, max_count), None, None
    for name, raw in relevant:
        base = name.partition(":")[0]
        if base == "_count":
            count = _count(raw, max_count)
        elif name == "_sort":
            sort = p.sort(raw)
        elif name == "_summary":
            if raw not in SUMMARY_VALUES:
                raise _bad(name, f"expected one of {', '.join(sorted(SUMMARY_VALUES))}")
            summary = raw
        elif name == "_total":
            if raw not in TOTAL_VALUES:
                raise _bad(name, f"expected one of {', '.join(sorted(TOTAL_VALUES))}")
            total = raw
        elif name == "_elements":
            elements.extend(e.strip() for e in raw.split(",") if e.strip())
        elif base in ("_include", "_revinclude"):
            inc = p.include(name, raw, reverse=base == "_revinclude")
            if inc is not None:
                (revincludes if base == "_revinclude" else includes).append(inc)
        else:
            criterion = p.criterion(name, raw)
            if criterion is not None:
                criteria.append(criterion)
    return SearchQuery(
        res_type=res_type,
        criteria=tuple(criteria),
        sort=tuple(sort),
        count=count,
        summary=summary,
        elements=tuple(elements),
        includes=tuple(includes),
        revincludes=tuple(revincludes),
        total=total,
        warnings=tuple(p.warnings),
    )
