"""The search parameters of a pull, checked at the gateway before any member is asked.

A pull's parameters are checked as a search of the gateway's own store checks them (`parse_search`), so
the requester hears about its own mistake: a malformed value (`recorded-date=2024-13-45`) is a 400 that
names it. Passed on unchecked, every member refused it and the requester got a 503 saying no member could
be asked, as if the region were down. A parameter R4 does not define for the type is a 400 under
`Prefer: handling=strict`; otherwise it is not sent to the members and an outcome entry of the answer
names it, as the store's search does. One R4 defines goes to the members even where the gateway's own
store could not evaluate it (`code:below`, a chain, a composite): the members search.

What the gateway cannot do on an answer merged from several members is refused the same way rather than
passed on and lost in the merge: `_include` and `_revinclude` (the included resources are not about the
patient and would be dropped) and `_summary=count`. The gateway itself sorts the merged answer (`_sort`:
each member could only sort its own part) and applies `_elements` and the other `_summary` values to each
entry; `_total` it answers itself (a merged answer always carries its exact count, whatever was asked).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from rzcp.errors import InvalidSearch, Issue
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.fhir.search.parser import SortKey, parse_search
from rzcp.fhir.wire import shape

#: Applied by the gateway to the merged answer, never sent to a member.
GATEWAY_PARAMS = frozenset(
    {"_count", "_page", "_format", "_pretty", "_elements", "_summary", "_sort", "_total"}
)
#: Not possible on an answer merged from several members.
_NOT_ON_A_PULL = frozenset({"_include", "_revinclude", "_contained", "_containedType"})
#: What $everything takes besides the patient in its path (its entries are of several types: no _sort).
_EVERYTHING_PARAMS = frozenset({"_type", "_count", "_page", "_format", "_pretty", "_elements", "_summary"})


def pull_search_params(res_type: str, registry: SearchRegistry) -> list[tuple[str, str, str]]:
    """(code, type, definition URL) of the search parameters R4 defines for `res_type` that a pull sends
    on to the members, besides the patient's: what the CapabilityStatement and the OpenAPI document list,
    so that an integrator can find `category`, `code` or `date` without reading this module."""
    own = {"patient", "subject"}
    return sorted(
        (p.code, p.type, p.url)
        for p in registry.params_for(res_type).values()
        if p.code not in own and p.code not in _NOT_ON_A_PULL and p.code not in GATEWAY_PARAMS
    )


@dataclass(frozen=True)
class CheckedParams:
    """The parameters sent to every member, the gateway's own sort of the merged answer, and the warnings
    about those left out (lenient handling)."""

    passed_on: tuple[tuple[str, str], ...]
    warnings: tuple[Issue, ...]
    sort: tuple[SortKey, ...] = ()


def check_pull_params(
    res_type: str,
    pairs: Sequence[tuple[str, str]],
    registry: SearchRegistry,
    *,
    strict: bool,
    skip: Collection[str],
) -> CheckedParams:
    """Raises InvalidSearch (400) for a malformed value, and under strict handling for a parameter that
    is unknown or cannot be applied to a pull. `skip` are the names the caller handles itself (the
    patient's).

    A parameter R4 defines for the type goes to the members even where the gateway's own store could not
    evaluate it (`code:below`, a chain, a composite): the members search, and may well support it. Only
    a name R4 does not define for the type is left out (lenient) or refused (strict)."""
    asked = [(name, value) for name, value in pairs if name not in skip]
    values = dict(asked)
    refused = [
        name for name, _ in asked if _not_on_a_pull(name, values) or not _defined(res_type, name, registry)
    ]
    warnings = [_refused(name, strict) for name in dict.fromkeys(refused)]
    kept = [(name, value) for name, value in asked if name not in refused]
    if not kept:  # the common pull: its patient only
        return CheckedParams((), tuple(warnings))
    # The whole query once, leniently: its limits (number of parameters, control characters, _sort keys)
    # and every value the gateway can read; what only the members can evaluate is theirs to judge.
    parse_search(res_type, kept, registry, strict=False, default_count=1, max_count=1)
    sort = [(name, value) for name, value in kept if name == "_sort"]
    ordered = parse_search(res_type, sort, registry, strict=strict, default_count=1, max_count=1)
    passed = tuple((name, value) for name, value in kept if name.partition(":")[0] not in GATEWAY_PARAMS)
    return CheckedParams(passed, (*warnings, *ordered.warnings), ordered.sort)


def check_everything_params(
    pairs: Sequence[tuple[str, str]], registry: SearchRegistry, *, strict: bool
) -> tuple[Issue, ...]:
    """$everything's own parameters; `start`, `end`, `_since` and anything else are not supported."""
    values = dict(pairs)
    refused = [name for name, _ in pairs if name not in _EVERYTHING_PARAMS or _not_on_a_pull(name, values)]
    shaping = [
        (name, value) for name, value in pairs if name in ("_count", "_summary") and name not in refused
    ]
    parse_search("Patient", shaping, registry, strict=True, default_count=1, max_count=1)  # their values
    asked = [t.strip() for v in (v for k, v in pairs if k == "_type") for t in v.split(",") if t.strip()]
    known = registry.resource_types()
    unknown = [t for t in asked if t not in known]
    if unknown:  # a typo must not read as "no data" (an integrator's walkthrough: `_type=Foo`, total 0)
        shown = ", ".join(t[:64] for t in unknown)
        raise InvalidSearch(
            f"_type: {shown} is no R4 resource type", code="not-supported", expression=("_type",)
        )
    return tuple(_refused(name, strict, where="by $everything") for name in dict.fromkeys(refused))


def shape_entries(bundle: dict[str, Any], *, elements: str | None, summary: str | None) -> None:
    """`_elements` and `_summary=true|text|data` on each matched entry of a merged answer (in place)."""
    if not elements and summary not in ("true", "text", "data"):
        return
    for entry in bundle.get("entry", ()):
        if entry.get("search", {}).get("mode") == "match":
            entry["resource"] = shape(entry["resource"], elements=elements, summary=summary)


def _defined(res_type: str, name: str, registry: SearchRegistry) -> bool:
    """Whether R4 defines the parameter (the first link of a chain, without its modifier) for the type."""
    code = name.partition(":")[0]
    head = code.split(".")[0]
    return code in GATEWAY_PARAMS or head == "_has" or registry.get(res_type, head) is not None


def _not_on_a_pull(name: str, values: dict[str, str]) -> bool:
    code = name.partition(":")[0]
    return (
        code in _NOT_ON_A_PULL
        or (code in GATEWAY_PARAMS and code != name)  # `_count:x`: no modifier on these
        or (name == "_summary" and values.get(name) == "count")
    )


def _refused(name: str, strict: bool, *, where: str = "on a pull from the region") -> Issue:
    if strict:
        raise InvalidSearch(f"Parameter '{name}' is not supported {where}", code="not-supported")
    return Issue("warning", "not-supported", f"Parameter '{name}' is not supported {where} and was ignored")
