"""Loading a simulated member's data: Synthea transaction Bundles and nl-core examples, into its store.

`read_member_data(paths, ...)` turns files into resources ready to store:
- a Bundle (transaction, batch or collection) gives its entries; an entry whose fullUrl is `urn:uuid:X`
  keeps X as its id, and every reference `urn:uuid:X` becomes `Type/X` (Synthea's shape);
- any other JSON file is one resource and keeps its own id (nl-core's shape);
- `id_prefix` puts a prefix before every id and relative reference, so two members loading the same file
  hold the same person under different local ids, as real organisations do;
- every Patient gets a BSN identifier: its own when valid and not already used in this load, else the one
  `bsn_map` gives for its id, else a test BSN derived from its id (rzcp.membersim.bsn);
- `types` keeps only those resource types (Patients are always kept: they carry the BSN).

`load_member_data(database_url, paths, ...)` migrates the member's database and stores what
`read_member_data` gives under those ids, leaving resources that already exist alone (a restarted member
keeps its data). Both work without the CLI, for tests and the demo.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rzcp.errors import Gone, NotFound
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.membersim.bsn import BSN_SYSTEM, derive_test_bsn, is_valid_bsn
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade
from rzcp.store.resources import ResourceStore

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]+)?$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass
class MemberData:
    resources: list[dict[str, Any]] = field(default_factory=list)
    #: The member's local patient id -> the BSN it carries.
    patients: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadReport:
    created: int
    kept: int
    patients: dict[str, str]


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        out.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return out


def _entries(document: dict[str, Any], source: Path) -> list[tuple[dict[str, Any], str | None]]:
    """(resource, urn:uuid fullUrl or None) pairs of one file."""
    if document.get("resourceType") == "Bundle" and document.get("type") in {
        "transaction",
        "batch",
        "collection",
    }:
        found = []
        for entry in document.get("entry") or []:
            resource = entry.get("resource")
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                full_url = entry.get("fullUrl")
                found.append((resource, full_url if str(full_url).startswith("urn:uuid:") else None))
        return found
    if not document.get("id"):
        document = {**document, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, source.name))}
    return [(document, None)]


def local_id(source_id: str, prefix: str) -> str:
    """The member's id for a source id: the prefix before it, shortened with a hash past 64 characters."""
    joined = f"{prefix}{source_id}"
    if len(joined) <= 64:
        return joined
    digest = hashlib.sha256(source_id.encode()).hexdigest()[:8]
    return f"{joined[: 64 - 9]}-{digest}"


def _rewrite(value: Any, urns: Mapping[str, str], prefix: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out[key] = _rewrite_reference(item, urns, prefix)
            else:
                out[key] = _rewrite(item, urns, prefix)
        return out
    if isinstance(value, list):
        return [_rewrite(item, urns, prefix) for item in value]
    return value


def _rewrite_reference(reference: str, urns: Mapping[str, str], prefix: str) -> str:
    if reference in urns:
        return urns[reference]
    match = _RELATIVE.match(reference)
    if match and prefix:
        return f"{match.group(1)}/{local_id(match.group(2), prefix)}{match.group(3) or ''}"
    return reference


def _give_bsn(patient: dict[str, Any], source_id: str, taken: set[str], bsn_map: Mapping[str, str]) -> str:
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict)]
    own = next((i.get("value") for i in identifiers if i.get("system") == BSN_SYSTEM), None)
    if source_id in bsn_map:
        bsn = bsn_map[source_id]
        if not is_valid_bsn(bsn):
            raise ValueError(f"the BSN map gives {source_id} an invalid BSN {bsn!r}")
    elif isinstance(own, str) and is_valid_bsn(own) and own not in taken:
        bsn = own
    else:
        bsn = derive_test_bsn(source_id, taken)
    taken.add(bsn)
    others = [i for i in identifiers if i.get("system") != BSN_SYSTEM]
    patient["identifier"] = [{"system": BSN_SYSTEM, "value": bsn}, *others]
    return bsn


def read_member_data(
    paths: Iterable[Path],
    *,
    id_prefix: str = "",
    types: Iterable[str] | None = None,
    bsn_map: Mapping[str, str] | None = None,
) -> MemberData:
    """The resources of the given files (or folders of .json files), ready to store; see the module."""
    if id_prefix and not _ID.match(id_prefix + "x"):
        raise ValueError(f"id prefix {id_prefix!r} may hold only letters, digits, '-' and '.'")
    keep = set(types) if types is not None else None
    bsn_map = bsn_map or {}
    data = MemberData()
    taken: set[str] = set()
    seen: set[tuple[str, str]] = set()
    patient_ids: set[str] = set()
    for path in _files(paths):
        document = orjson.loads(path.read_bytes())
        pairs = _entries(document, path)
        urns: dict[str, str] = {}
        sourced: list[tuple[dict[str, Any], str]] = []
        for resource, full_url in pairs:
            source_id = full_url.removeprefix("urn:uuid:") if full_url else str(resource.get("id") or "")
            if not _ID.match(source_id):
                raise ValueError(f"{path.name}: {resource['resourceType']} has no usable id ({source_id!r})")
            if full_url:
                urns[full_url] = f"{resource['resourceType']}/{local_id(source_id, id_prefix)}"
            sourced.append((resource, source_id))
        for resource, source_id in sourced:
            res_type = resource["resourceType"]
            if keep is not None and res_type not in keep and res_type != "Patient":
                continue
            own_id = local_id(source_id, id_prefix)
            if (res_type, own_id) in seen:
                continue
            seen.add((res_type, own_id))
            stored = _rewrite({k: v for k, v in resource.items() if k not in {"id", "meta"}}, urns, id_prefix)
            stored = {"resourceType": res_type, "id": own_id, **stored}
            if res_type == "Patient":
                data.patients[own_id] = _give_bsn(stored, source_id, taken, bsn_map)
                patient_ids.add(source_id)
            data.resources.append(stored)
    unknown = sorted(set(bsn_map) - patient_ids)
    if unknown:  # a typo would otherwise leave that patient with a derived BSN, unnoticed
        raise ValueError(
            f"the BSN map names no patient of these files: {', '.join(unknown[:5])}; its keys are the "
            f"patients' source ids (a Synthea entry's fullUrl UUID, an example's id): "
            f"{', '.join(sorted(patient_ids)[:5])}"
        )
    return data


async def store_member_data(database: Database, data: MemberData) -> LoadReport:
    """Store the resources under their ids, in one transaction; existing ones are left as they are."""
    registry = SearchRegistry.default()
    created = kept = 0
    async with database.write() as conn:
        store = ResourceStore(conn, registry)
        for resource in data.resources:
            try:
                await store.read(resource["resourceType"], resource["id"])
            except NotFound:
                await store.create(resource, res_id=resource["id"])
                created += 1
                continue
            except Gone:
                pass
            kept += 1
    return LoadReport(created, kept, dict(data.patients))


async def load_member_data(
    database_url: str,
    paths: Iterable[Path],
    *,
    id_prefix: str = "",
    types: Iterable[str] | None = None,
    bsn_map: Mapping[str, str] | None = None,
) -> LoadReport:
    """Migrate the member's database to head and load the files into it (see the module)."""
    data = read_member_data(paths, id_prefix=id_prefix, types=types, bsn_map=bsn_map)
    database = Database(database_url)
    try:
        await upgrade(database)
        return await store_member_data(database, data)
    finally:
        await database.dispose()


def read_bsn_map(path: Path) -> dict[str, str]:
    """A JSON object {source patient id: BSN}, every BSN passing the 11-check."""
    raw = orjson.loads(path.read_bytes())
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError(f"{path}: a BSN map is a JSON object of patient id to BSN string")
    bad = sorted(k for k, v in raw.items() if not is_valid_bsn(v))
    if bad:
        raise ValueError(f"{path}: invalid BSNs for {', '.join(bad[:5])}")
    return dict(raw)
