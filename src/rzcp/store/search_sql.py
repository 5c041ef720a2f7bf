"""Run a parsed `SearchQuery` against the store, with SQLAlchemy Core, on SQLite and PostgreSQL alike.

Each criterion becomes `resources.pk IN (SELECT res_pk FROM idx_<type> WHERE res_type=:t AND param=:p AND
<value test>)`: one range scan of the (res_type, param, value) index per criterion, which both databases
plan well, and which makes :not and :missing a plain NOT IN. Sorting by a parameter uses a correlated
MIN/MAX per resource, missing values last, then `pk` so that paging is stable.

Date and number comparisons follow R4 search.html#prefix: a value is the range its precision implies, and
each prefix compares the resource's range with the search value's range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, false, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.fhir.search.parser import (
    Criterion,
    DateValue,
    Include,
    NumberValue,
    OfTypeValue,
    ReferenceValue,
    SearchQuery,
    SearchValue,
    StringValue,
    TokenValue,
    UriValue,
)
from rzcp.fhir.search.values import DATE_MAX, DATE_MIN
from rzcp.store.indexer import SORT_COLUMN
from rzcp.store.tables import INDEX_TABLES, idx_reference, idx_token, resources

#: At most this many resources are added by one _include or _revinclude, so a popular target cannot
#: turn one page into the whole database.
MAX_INCLUDED_PER_PARAM = 1000


@dataclass(frozen=True)
class StoredRow:
    """One resource of a result, as stored (`content` is the JSON text sent on the wire)."""

    res_type: str
    res_id: str
    content: str
    mode: str  # "match" or "include", the Bundle entry's search.mode


@dataclass
class SearchResult:
    matches: list[StoredRow]
    included: list[StoredRow]
    total: int | None
    has_more: bool


# --- value tests --------------------------------------------------------------------------------------


def _like_prefix(column: Any, text: str) -> ColumnElement[bool]:
    return column.startswith(text, autoescape=True)


def _token_test(table: Table, v: SearchValue) -> ColumnElement[bool]:
    if isinstance(v, StringValue):  # :text, a word of the display or text starting with the value
        return or_(_like_prefix(table.c.text, v.norm), table.c.text.contains(f" {v.norm}", autoescape=True))
    if isinstance(v, OfTypeValue):
        return and_(table.c.system == v.type_system, table.c.code == v.type_code, table.c.text == v.value)
    assert isinstance(v, TokenValue)
    tests = []
    if v.no_system:
        tests.append(table.c.system.is_(None))
    elif v.system is not None:
        tests.append(table.c.system == v.system)
    if v.code is not None:
        tests.append(table.c.code == v.code)
    return and_(*tests)


def _date_test(low: Any, high: Any, v: DateValue, now: datetime) -> ColumnElement[bool]:
    inside = and_(low >= v.low, high <= v.high)
    match v.prefix:
        case "eq":
            return inside
        case "ne":
            return or_(low < v.low, high > v.high)
        case "gt":
            return high > v.high
        case "lt":
            return low < v.low
        case "ge":
            return or_(high > v.high, inside)
        case "le":
            return or_(low < v.low, inside)
        case "sa":
            return low > v.high
        case "eb":
            return high < v.low
        case _:  # ap: within 10% of the distance between the value and now
            delta = abs(now - v.low) / 10
            lo = v.low - delta if v.low - DATE_MIN > delta else DATE_MIN
            hi = v.high + delta if DATE_MAX - v.high > delta else DATE_MAX
            return and_(low <= hi, high >= lo)


def _number_test(table: Table, v: NumberValue, with_units: bool) -> ColumnElement[bool]:
    col = table.c.value
    match v.prefix:
        case "eq":
            test = and_(col >= v.low, col < v.high)
        case "ne":
            test = or_(col < v.low, col >= v.high)
        case "gt" | "sa":
            test = col > v.value
        case "lt" | "eb":
            test = col < v.value
        case "ge":
            test = col >= v.value
        case "le":
            test = col <= v.value
        case _:  # ap: within 10% of the value, and at least its precision
            spread = abs(v.value) / 10
            test = and_(col >= min(v.low, v.value - spread), col <= max(v.high, v.value + spread))
    if not with_units or v.code is None:
        return test
    if v.system is not None:
        return and_(test, table.c.system == v.system, table.c.code == v.code)
    return and_(test, or_(table.c.code == v.code, table.c.unit == v.code))


def _uri_above(value: str) -> list[str]:
    """The value and every path prefix of it: what a uri:above search matches."""
    out, current = [value], value
    while "/" in current.rstrip("/").split("://", 1)[-1]:
        current = current.rstrip("/").rsplit("/", 1)[0]
        out.append(current)
    return out


def _value_test(table: Table, c: Criterion, v: SearchValue, now: datetime) -> ColumnElement[bool]:
    kind = c.param.type
    if table is idx_token:
        return _token_test(table, v)
    if kind == "string" and isinstance(v, StringValue):
        if c.modifier == "exact":
            return table.c.value_exact == v.exact
        if c.modifier == "contains":
            return table.c.value_norm.contains(v.norm, autoescape=True)
        return _like_prefix(table.c.value_norm, v.norm)
    if kind == "date" and isinstance(v, DateValue):
        return _date_test(table.c.low, table.c.high, v, now)
    if kind in ("number", "quantity") and isinstance(v, NumberValue):
        return _number_test(table, v, with_units=kind == "quantity")
    if kind == "reference" and isinstance(v, ReferenceValue):
        if v.url is not None:
            return table.c.url == v.url
        tests = [table.c.target_id == v.target_id]
        if v.target_type is not None:
            tests.append(table.c.target_type == v.target_type)
        return and_(*tests)
    if kind == "uri" and isinstance(v, UriValue):
        if c.modifier == "below":
            return _like_prefix(table.c.value, v.value)
        if c.modifier == "above":
            return table.c.value.in_(_uri_above(v.value))
        return table.c.value == v.value
    raise AssertionError("value does not fit its parameter")  # the parser never builds this


def _criterion_clause(c: Criterion, now: datetime) -> ColumnElement[bool]:
    param = c.param
    if param.column == "res_id":
        ids = [v.code for v in c.values if isinstance(v, TokenValue)]
        test = resources.c.res_id.in_(ids)
        return not_(test) if c.modifier == "not" else test
    if param.column == "last_updated":
        lu = resources.c.last_updated
        return or_(*(_date_test(lu, lu, v, now) for v in c.values if isinstance(v, DateValue)))
    table = INDEX_TABLES[param.type]
    name = param.code
    if c.modifier in ("of-type", "identifier"):
        table, name = idx_token, f"{param.code}:{c.modifier}"
    where = [table.c.res_type == param.base, table.c.param == name]
    if c.missing is not None:
        present = select(table.c.res_pk).where(*where)
        return resources.c.pk.not_in(present) if c.missing else resources.c.pk.in_(present)
    tests = [_value_test(table, c, v, now) for v in c.values]
    matching = select(table.c.res_pk).where(*where, or_(*tests))
    return resources.c.pk.not_in(matching) if c.modifier == "not" else resources.c.pk.in_(matching)


# --- the query ----------------------------------------------------------------------------------------


def _where(query: SearchQuery, now: datetime) -> list[ColumnElement[bool]]:
    return [
        resources.c.res_type == query.res_type,
        resources.c.deleted == false(),
        *(_criterion_clause(c, now) for c in query.criteria),
    ]


def _order_by(query: SearchQuery) -> list[Any]:
    order: list[Any] = []
    for key in query.sort:
        param = key.param
        if param.column is not None:
            col: Any = resources.c[param.column]
        else:
            table = INDEX_TABLES[param.type]
            if param.type == "date":
                value = table.c.high if key.descending else table.c.low
            else:
                value = table.c[SORT_COLUMN[param.type]]
            aggregate = func.max(value) if key.descending else func.min(value)
            col = (
                select(aggregate)
                .where(
                    table.c.res_pk == resources.c.pk,
                    table.c.res_type == param.base,
                    table.c.param == param.code,
                )
                .scalar_subquery()
            )
        order.append(col.desc().nulls_last() if key.descending else col.asc().nulls_last())
    if not query.sort:
        order.append(resources.c.last_updated)
    order.append(resources.c.pk)
    return order


_COLUMNS = (resources.c.pk, resources.c.res_type, resources.c.res_id, resources.c.content)


def _includes_select(include: Include, match_pks: Sequence[int]) -> Select[Any]:
    ref = idx_reference
    joined = resources.join(
        ref, and_(resources.c.res_type == ref.c.target_type, resources.c.res_id == ref.c.target_id)
    )
    stmt = (
        select(*_COLUMNS)
        .select_from(joined)
        .where(
            ref.c.res_pk.in_(match_pks),
            ref.c.res_type == include.source_type,
            ref.c.param == include.param.code,
            resources.c.deleted == false(),
        )
    )
    if include.target_type is not None:
        stmt = stmt.where(resources.c.res_type == include.target_type)
    return stmt.distinct().order_by(resources.c.pk).limit(MAX_INCLUDED_PER_PARAM)


def _revincludes_select(include: Include, res_type: str, match_ids: Sequence[str]) -> Select[Any]:
    ref = idx_reference
    referring = select(ref.c.res_pk).where(
        ref.c.res_type == include.source_type,
        ref.c.param == include.param.code,
        ref.c.target_type == res_type,
        ref.c.target_id.in_(match_ids),
    )
    return (
        select(*_COLUMNS)
        .where(
            resources.c.res_type == include.source_type,
            resources.c.deleted == false(),
            resources.c.pk.in_(referring),
        )
        .order_by(resources.c.pk)
        .limit(MAX_INCLUDED_PER_PARAM)
    )


async def execute_search(conn: AsyncConnection, query: SearchQuery, *, offset: int) -> SearchResult:
    """One page of matches from `offset`, what they include, and the total when it was asked for."""
    now = datetime.now(UTC).replace(tzinfo=None)  # the store's timestamps are naive UTC
    where = _where(query, now)
    total = None
    if query.total == "accurate" or query.summary == "count":
        total = (await conn.execute(select(func.count()).select_from(resources).where(*where))).scalar_one()
    matches: list[StoredRow] = []
    has_more = False
    match_rows: list[Any] = []
    if query.count > 0 and query.summary != "count":
        stmt = (
            select(*_COLUMNS).where(*where).order_by(*_order_by(query)).offset(offset).limit(query.count + 1)
        )
        match_rows = list((await conn.execute(stmt)).all())
        has_more = len(match_rows) > query.count
        match_rows = match_rows[: query.count]
        matches = [StoredRow(r.res_type, r.res_id, r.content, "match") for r in match_rows]
    included: list[StoredRow] = []
    if match_rows and (query.includes or query.revincludes):
        seen = {r.pk for r in match_rows}
        statements = [_includes_select(inc, list(seen)) for inc in query.includes]
        ids = [r.res_id for r in match_rows]
        statements += [_revincludes_select(inc, query.res_type, ids) for inc in query.revincludes]
        for stmt in statements:
            for r in (await conn.execute(stmt)).all():
                if r.pk not in seen:
                    seen.add(r.pk)
                    included.append(StoredRow(r.res_type, r.res_id, r.content, "include"))
    return SearchResult(matches, included, total, has_more)
