"""Validation of what comes in, with fhir.resources' R4B models, once, at the edge.

R4 is what travels on the wire; the R4B models are the closest strict validator in Python. They refuse a
little valid R4 (an extension on `id`, types that R4B renamed or removed): the gateway refuses that too,
with a 422 naming the element, rather than storing what it cannot check (README, "Validation").
After this point resources are plain dicts: the models cost about 30 times a JSON parse.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, get_args

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from rzcp.errors import InvalidResource, Issue

_MAX_ISSUES = 20
#: orjson's own limit on nesting, for the message (FHIR's deepest real content is a few dozen levels).
MAX_DEPTH = 254


def model_class(res_type: str) -> Any | None:
    try:
        return get_fhir_model_class(res_type)
    except (ValueError, KeyError, AttributeError):
        return None


def validate_resource(data: Any, *, expected_type: str) -> dict[str, Any]:
    """The body as a dict if it is a valid `expected_type`; InvalidResource naming each problem otherwise."""
    if not isinstance(data, dict):
        raise InvalidResource("the body is not a JSON object", code="structure")
    res_type = data.get("resourceType")
    if res_type != expected_type:
        raise InvalidResource(
            f"resourceType is {res_type!r} but this endpoint takes {expected_type}",
            code="invalid",
            expression=("resourceType",),
        )
    bad = _control_character_path(data, expected_type)
    if bad is not None:
        raise InvalidResource(
            f"{bad}: FHIR strings may not hold control characters (other than tab, CR and LF)",
            code="structure",
            expression=(bad,),
        )
    model = model_class(expected_type)
    if model is None:
        raise InvalidResource(f"{expected_type} cannot be validated by this server", code="not-supported")
    try:
        serialised = orjson.dumps(data)
    except TypeError:  # nested deeper than orjson writes (255 levels): it could never be stored or sent
        raise InvalidResource(
            f"{expected_type} is nested too deeply (JSON of more than {MAX_DEPTH} levels)", code="structure"
        ) from None
    text = _string_for_object(data, model, expected_type) if _JSON_TEXT.search(serialised) else None
    if text is not None:
        raise InvalidResource(
            f"{text}: a string where FHIR has an object (a complex type such as a CodeableConcept)",
            code="structure",
            expression=(text,),
        )
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, expected_type) from None
    except (ValueError, TypeError) as exc:  # the models raise these for some malformed primitives
        raise InvalidResource(
            f"{expected_type} is not valid: {type(exc).__name__}", code="structure"
        ) from None
    return data


#: A JSON string value that begins like JSON text (`"{...` or `"[...`): only then can a string stand for an
#: object, and only then is the slower walk by the model's types needed.
_JSON_TEXT = re.compile(rb'[:\[,]\s*"\s*[\[{]')


def _string_for_object(value: dict[str, Any], model: Any, path: str) -> str | None:
    """The path of the first string given where the model has a complex type. The models read such a
    string as JSON text: a CodeableConcept given as the string of its JSON passed, and was stored as that
    string, and a `meta` given so was a 500 (a review found both)."""
    complex_fields = _complex_fields(model)
    for key, item in value.items():
        inner = complex_fields.get(key)
        if inner is None:
            continue
        for i, element in enumerate(item if isinstance(item, list) else [item]):
            where = f"{path}.{key}" + (f"[{i}]" if isinstance(item, list) else "")
            if isinstance(element, str):
                return where
            if isinstance(element, dict):
                named = element.get("resourceType")  # a contained or entry resource: its own model
                typed = model_class(named) if isinstance(named, str) else None
                found = _string_for_object(element, typed or inner, where)
                if found is not None:
                    return found
    return None


@lru_cache(maxsize=1024)
def _complex_fields(model: Any) -> dict[str, Any]:
    """A model's elements of a complex type, by their JSON name, with the model of that type."""
    found: dict[str, Any] = {}
    for field in model.model_fields.values():
        inner = _complex_type(field.annotation)
        if inner is not None and field.alias:
            found[field.alias] = inner.get_model_klass()
    return found


def _complex_type(annotation: Any) -> Any | None:
    for outer in (annotation, *get_args(annotation)):
        for candidate in (outer, *get_args(outer)):
            if isinstance(candidate, type) and hasattr(candidate, "get_model_klass"):
                return candidate
    return None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _control_character_path(value: Any, path: str) -> str | None:
    """The path of the first string holding a character FHIR forbids; the models let them through."""
    if isinstance(value, str):
        return path if _CONTROL.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _control_character_path(item, f"{path}.{key}") if not _CONTROL.search(key) else path
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _control_character_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _invalid(exc: ValidationError, res_type: str) -> InvalidResource:
    """The model's complaints, by element path, without echoing the offending values back."""
    issues = []
    for err in exc.errors()[:_MAX_ISSUES]:
        path = ".".join(str(p) for p in (res_type, *err.get("loc", ())))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":  # the models try a string given for an object as JSON text
            message = "a string where FHIR has an object (a complex type such as a CodeableConcept)"
        issues.append(Issue("error", "structure", f"{path}: {message}", (path,)))
    first, rest = issues[0], issues[1:]
    return InvalidResource(
        first.diagnostics, code="structure", expression=first.expression, extra_issues=rest
    )


@lru_cache(maxsize=256)
def summary_elements(res_type: str) -> frozenset[str]:
    """The elements that R4 marks isSummary for a type (what `_summary=true` keeps)."""
    model = model_class(res_type)
    if model is None:
        return frozenset({"resourceType", "id", "meta"})
    names = {"resourceType"}
    for field in model.model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("summary_element_property") and field.alias:
            names.add(field.alias)
            names.add("_" + field.alias)
    return frozenset(names)
