"""Bundles for search results and history, assembled from stored JSON text without parsing it again
(unless the client asked for `_elements` or `_summary`, which need the resource as a dict)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from rzcp.errors import Issue
from rzcp.fhir.outcome import operation_outcome
from rzcp.fhir.wire import shape
from rzcp.store.resources import Version, instant


def _resource_text(content: str, elements: str | None, summary: str | None) -> str:
    if not (elements or summary):
        return content
    return orjson.dumps(shape(orjson.loads(content), elements=elements, summary=summary)).decode()


def _assemble(kind: str, total: int | None, self_url: str, next_url: str | None, entries: list[str]) -> bytes:
    """The Bundle's JSON with its entries (already JSON text) spliced in."""
    head: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": "self", "url": self_url}]
    if next_url:
        head["link"].append({"relation": "next", "url": next_url})
    text = orjson.dumps(head).decode()
    if entries:
        text = text[:-1] + ',"entry":[' + ",".join(entries) + "]}"
    return text.encode()


def searchset(
    *,
    base: str,
    matches: Iterable[tuple[str, str, str]],
    included: Iterable[tuple[str, str, str]],
    total: int | None,
    self_url: str,
    next_url: str | None,
    warnings: list[Issue],
    elements: str | None = None,
    summary: str | None = None,
) -> bytes:
    """A searchset Bundle; `matches`/`included` are (type, id, stored JSON) triples."""
    entries: list[str] = []
    for mode, rows in (("match", matches), ("include", included)):
        tail = orjson.dumps({"search": {"mode": mode}}).decode()[1:]
        for res_type, res_id, content in rows:
            full_url = orjson.dumps(f"{base}/{res_type}/{res_id}").decode()
            entries.append(
                f'{{"fullUrl":{full_url},"resource":{_resource_text(content, elements, summary)},{tail}'
            )
    if warnings:
        outcome = {"resource": operation_outcome(warnings), "search": {"mode": "outcome"}}
        entries.append(orjson.dumps(outcome).decode())
    return _assemble("searchset", total, self_url, next_url, entries)


_HISTORY_STATUS = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}
_HISTORY_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}


def history(
    *, base: str, versions: Iterable[Version], total: int | None, self_url: str, next_url: str | None
) -> bytes:
    entries: list[str] = []
    for v in versions:
        url = v.res_type if v.method == "create" else f"{v.res_type}/{v.res_id}"
        entry: dict[str, Any] = {
            "fullUrl": f"{base}/{v.res_type}/{v.res_id}",
            "request": {"method": _HISTORY_METHOD[v.method], "url": url},
            "response": {
                "status": _HISTORY_STATUS[v.method],
                "etag": v.etag,
                "lastModified": instant(v.last_updated),
            },
        }
        text = orjson.dumps(entry).decode()
        if not v.deleted:
            text = text[:-1] + ',"resource":' + v.content + "}"
        entries.append(text)
    return _assemble("history", total, self_url, next_url, entries)
