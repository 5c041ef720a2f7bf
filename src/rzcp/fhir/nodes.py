"""Every JSON object of a resource with its FHIRPath-like location, for the rules that must look
everywhere in what a caller sent (a BSN in any identifier, a reference to another patient at any depth)
and name the element they refuse."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def json_objects(node: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every JSON object in `node` with its path (`Consent.provision.actor[0]`), depth first."""
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            yield from json_objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from json_objects(item, f"{path}[{i}]")
