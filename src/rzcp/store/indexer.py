"""Turn a resource into the rows of the search index tables.

The store calls `index_resource` on every write and replaces the resource's index rows with the result.
It must never fail a valid write: a parameter whose expression fails on odd data is skipped and logged at
debug level, with the parameter's name only (never a value: values are patient data).

Two pseudo-parameters ride along in `idx_token` because the schema has no better home for them, and their
names cannot clash with real codes (which never contain a colon):
- `<code>:of-type` per Identifier: the identifier type's system/code, and the identifier value in `text`;
- `<code>:identifier` per Reference.identifier of a reference parameter: system and value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Table

from rzcp.fhir.search.definitions import R4_MODEL, CompiledPath, SearchParamDef, SearchRegistry
from rzcp.fhir.search.values import (
    decimal_range,
    normalize_string,
    parse_date_range,
    parse_reference,
    period_range,
)
from rzcp.store.tables import INDEX_TABLES

log = logging.getLogger(__name__)

_PATH2TYPE: dict[str, str] = R4_MODEL["path2Type"]
_CHOICES: dict[str, list[str]] = R4_MODEL["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = R4_MODEL["pathsDefinedElsewhere"]
_PRIMITIVES = frozenset(
    {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
        "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
    }
)  # fmt: skip
_BACKBONE = frozenset({"BackboneElement", "Element"})
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_RANGE_OPEN = 1e300  # an open end of a Range, finite so every database stores it as a plain float

Row = dict[str, Any]
Value = tuple[Any, str | None]  # a value and its declared FHIR type when the walk knows it


def _lengths(table: Table) -> dict[str, int]:
    return {c.name: c.type.length for c in table.columns if getattr(c.type, "length", None)}


_LENGTHS = {t.name: _lengths(t) for t in set(INDEX_TABLES.values())}


def _fhir_type(name: str | None) -> str | None:
    if name is None:
        return None
    if name == "System.String":
        return "string"
    lowered = name[:1].lower() + name[1:]
    return lowered if lowered in _PRIMITIVES else name


# --- evaluation ---------------------------------------------------------------------------------------


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        yield from value
    elif value is not None:
        yield value


def _walk(resource: dict[str, Any], cp: CompiledPath) -> list[Value]:
    """Evaluate a plain path over the JSON dict, typing each step with the R4 model."""
    if resource.get("resourceType") != cp.root:
        return []
    nodes: list[tuple[Any, str | None, str]] = [(resource, cp.root, cp.root)]  # value, type, type path
    assert cp.steps is not None
    for step in cp.steps:
        found: list[tuple[Any, str | None, str]] = []
        for node, _, type_path in nodes:
            if not isinstance(node, dict):
                continue
            path = f"{type_path}.{step.name}"
            path = _ELSEWHERE.get(path, path)
            choices = _CHOICES.get(path)
            if choices:
                for choice in choices:
                    for item in _flatten(node.get(step.name + choice)):
                        found.append((item, _fhir_type(choice), choice))
                continue
            declared = _PATH2TYPE.get(path)
            next_path = path if declared is None or declared in _BACKBONE else declared
            for item in _flatten(node.get(step.name)):
                found.append((item, _fhir_type(declared), next_path))
        if step.where_field is not None:
            found = [
                f for f in found if isinstance(f[0], dict) and f[0].get(step.where_field) == step.where_value
            ]
        nodes = found
    if cp.as_type is not None:
        wanted = _fhir_type(cp.as_type)
        nodes = [n for n in nodes if n[1] == wanted]
    return [(value, declared) for value, declared, _ in nodes]


def evaluate(resource: dict[str, Any], cp: CompiledPath) -> list[Value]:
    """The values of one compiled member; raises whatever fhirpathpy raises."""
    if cp.steps is not None:
        return _walk(resource, cp)
    assert cp.function is not None
    return [(v, None) for v in cp.function(resource)]


# --- conversion to rows -------------------------------------------------------------------------------


def _token_rows(value: Any, declared: str | None, code: str, extra: list[tuple[str, Row]]) -> list[Row]:
    if isinstance(value, bool):
        return [{"system": None, "code": "true" if value else "false", "text": None}]
    if isinstance(value, str):
        return [{"system": None, "code": value, "text": None}]
    if not isinstance(value, dict):
        return []
    if declared == "CodeableConcept" or "coding" in value or (declared is None and set(value) == {"text"}):
        rows = [_coding_row(c) for c in _flatten(value.get("coding")) if isinstance(c, dict)]
        if isinstance(value.get("text"), str):
            rows.append({"system": None, "code": None, "text": normalize_string(value["text"])})
        return rows
    if declared == "Coding" or (declared is None and "value" not in value):
        return [_coding_row(value)]
    if "value" not in value:
        return []
    if declared == "ContactPoint" or (declared is None and value.get("system") in _CONTACT_SYSTEMS):
        return [{"system": None, "code": _str(value.get("value")), "text": None}]
    # Identifier
    type_cc = value.get("type") if isinstance(value.get("type"), dict) else {}
    type_text = type_cc.get("text") if isinstance(type_cc.get("text"), str) else None
    for coding in _flatten(type_cc.get("coding")):
        if isinstance(coding, dict):
            extra.append(
                (
                    f"{code}:of-type",
                    {
                        "system": _str(coding.get("system")),
                        "code": _str(coding.get("code")),
                        "text": _str(value.get("value")),
                    },
                )
            )
    return [
        {
            "system": _str(value.get("system")),
            "code": _str(value.get("value")),
            "text": normalize_string(type_text) if type_text else None,
        }
    ]


def _coding_row(coding: dict[str, Any]) -> Row:
    display = coding.get("display")
    return {
        "system": _str(coding.get("system")),
        "code": _str(coding.get("code")),
        "text": normalize_string(display) if isinstance(display, str) else None,
    }


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reference_rows(value: Any, cp: CompiledPath, code: str, extra: list[tuple[str, Row]]) -> list[Row]:
    if isinstance(value, str):  # canonical or uri
        parsed = parse_reference(value.split("|", 1)[0])
        if parsed is None:
            return []
        target_type, target_id, _ = parsed
        rows = [{"target_type": target_type, "target_id": target_id, "url": value}]
    elif isinstance(value, dict):
        ident = value.get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            extra.append(
                (
                    f"{code}:identifier",
                    {"system": _str(ident.get("system")), "code": ident["value"], "text": None},
                )
            )
        ref = value.get("reference")
        parsed = parse_reference(ref) if isinstance(ref, str) else None
        if parsed is None:
            return []
        target_type, target_id, url = parsed
        if target_type is None and isinstance(value.get("type"), str):
            target_type = value["type"]
        rows = [{"target_type": target_type, "target_id": target_id, "url": url}]
    else:
        return []
    if cp.resolve_type is not None:
        rows = [r for r in rows if r["target_type"] == cp.resolve_type]
    return rows


def _date_rows(value: Any) -> list[Row]:
    if isinstance(value, dict):
        if "start" in value or "end" in value:
            low, high = period_range(value)
            return [{"low": low, "high": high}] if low <= high else []
        return [r for event in _flatten(value.get("event")) for r in _date_rows(event)]
    if value is None or isinstance(value, bool | int | float | Decimal):
        return []
    try:
        low, high = parse_date_range(str(value))
    except ValueError:  # a time, or fhirpathpy's object for one: not a date
        return []
    return [{"low": low, "high": high}]


def _number_rows(value: Any) -> list[Row]:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return []
    number, low, high = decimal_range(value)
    return [{"value": number, "low": low, "high": high, "system": None, "code": None, "unit": None}]


def _quantity_rows(value: Any) -> list[Row]:
    if not isinstance(value, dict):
        return []
    if "low" in value or "high" in value:  # Range: one row spanning it, `value` at its known end
        lo, hi = value.get("low") or {}, value.get("high") or {}
        lo_v = decimal_range(lo["value"])[1] if isinstance(lo, dict) and "value" in lo else None
        hi_v = decimal_range(hi["value"])[2] if isinstance(hi, dict) and "value" in hi else None
        if lo_v is None and hi_v is None:
            return []
        units = lo if lo_v is not None else hi
        return [
            {
                "value": float(lo["value"]) if lo_v is not None else float(hi["value"]),
                "low": lo_v if lo_v is not None else -_RANGE_OPEN,
                "high": hi_v if hi_v is not None else _RANGE_OPEN,
                "system": _str(units.get("system")),
                "code": _str(units.get("code")),
                "unit": _str(units.get("unit")),
            }
        ]
    if "value" not in value:
        return []
    number, low, high = decimal_range(value["value"])
    if isinstance(value.get("currency"), str):  # Money
        system, code, unit = "urn:iso:std:iso:4217", value["currency"], value["currency"]
    else:
        system, code, unit = _str(value.get("system")), _str(value.get("code")), _str(value.get("unit"))
    return [{"value": number, "low": low, "high": high, "system": system, "code": code, "unit": unit}]


def _string_rows(value: Any) -> list[Row]:
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, dict):  # HumanName or Address
        texts = [
            t
            for part in (*_NAME_PARTS, *_ADDRESS_PARTS)
            for t in _flatten(value.get(part))
            if isinstance(t, str)
        ]
    else:
        return []
    return [{"value_norm": normalize_string(t), "value_exact": t} for t in dict.fromkeys(texts) if t.strip()]


def _uri_rows(value: Any) -> list[Row]:
    return [{"value": value}] if isinstance(value, str) and value else []


def _rows_for(
    param: SearchParamDef, cp: CompiledPath, value: Any, declared: str | None, extra: list
) -> list[Row]:
    kind = param.type
    if kind == "token":
        return _token_rows(value, declared, param.code, extra)
    if kind == "reference":
        return _reference_rows(value, cp, param.code, extra)
    if kind == "date":
        return _date_rows(value)
    if kind == "number":
        return _number_rows(value)
    if kind == "quantity":
        return _quantity_rows(value)
    if kind == "string":
        return _string_rows(value)
    if kind == "uri":
        return _uri_rows(value)
    return []


# --- entry point --------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _plan(registry: SearchRegistry, res_type: str) -> tuple[tuple[SearchParamDef, str], ...]:
    """The indexed parameters of a type with their table names, compiled on first use of the type."""
    plan = []
    for param in registry.params_for(res_type).values():
        if param.supported and param.column is None:
            _ = param.compiled
            plan.append((param, INDEX_TABLES[param.type].name))
    return tuple(plan)


def _truncate(table: str, row: Row) -> Row:
    for column, length in _LENGTHS[table].items():
        value = row.get(column)
        if isinstance(value, str) and len(value) > length:
            row[column] = value[:length]
    return row


def index_resource(resource: dict[str, Any], registry: SearchRegistry) -> dict[str, list[dict[str, Any]]]:
    """The index rows of a resource, per table name, without `pk`/`res_pk` (the store adds `res_pk`).

    Rows are de-duplicated per parameter. _id and _lastUpdated have no rows: they are columns of
    `resources`.
    """
    res_type = resource.get("resourceType")
    out: dict[str, list[dict[str, Any]]] = {}
    if not isinstance(res_type, str):
        return out
    token_table = INDEX_TABLES["token"].name
    for param, table in _plan(registry, res_type):
        try:
            rows, extra = _param_rows(resource, param)
        except Exception as exc:  # odd but valid data must not fail the write
            log.debug("search parameter %s.%s skipped: %s", res_type, param.code, type(exc).__name__)
            continue
        _add(out, table, res_type, param.code, rows)
        for name, row in extra:
            _add(out, token_table, res_type, name, [row])
    return out


def _param_rows(resource: dict[str, Any], param: SearchParamDef) -> tuple[list[Row], list[tuple[str, Row]]]:
    """One parameter's index rows of a resource, and the extra token rows some of them add (`:of-type`)."""
    extra: list[tuple[str, Row]] = []
    rows: list[Row] = []
    for cp in param.compiled:
        for value, declared in evaluate(resource, cp):
            rows.extend(_rows_for(param, cp, value, declared, extra))
    return rows, extra


#: The index column `_sort` orders by, per parameter type (a date by its low or high end).
SORT_COLUMN = {"string": "value_norm", "token": "code", "number": "value", "quantity": "value"}


def sort_value(resource: dict[str, Any], param: SearchParamDef, *, descending: bool) -> Any | None:
    """What the store orders `resource` by for `_sort` on `param`, from the same index rows: the least
    value ascending, the greatest descending, None when there is none. The exchange sorts an answer merged
    from several members with it, so a pull orders as a search of the store does."""
    if param.column is not None:
        if param.code == "_id":
            res_id = resource.get("id")
            return res_id if isinstance(res_id, str) else None
        meta = resource.get("meta")
        stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
        try:
            return parse_date_range(stamp)[0] if isinstance(stamp, str) else None
        except ValueError:  # a member's malformed stamp: no value, as for none
            return None
    try:
        rows, _ = _param_rows(resource, param)
    except Exception:  # odd but valid data: no value to sort by, as when it was indexed
        return None
    column = ("high" if descending else "low") if param.type == "date" else SORT_COLUMN[param.type]
    found = [row[column] for row in rows if row.get(column) is not None]
    if not found:
        return None
    return max(found) if descending else min(found)


def _add(out: dict[str, list[Row]], table: str, res_type: str, param: str, rows: list[Row]) -> None:
    if not rows:
        return
    target = out.setdefault(table, [])
    seen = {tuple(r.items()) for r in target if r["param"] == param}
    for row in rows:
        row = _truncate(table, {"res_type": res_type, "param": param, **row})
        key = tuple(row.items())
        if key not in seen:
            seen.add(key)
            target.append(row)
