"""The patient behind a login: the Patient resource in the store that carries the BSN as identifier,
created when there is none. Its id (never the BSN) is what patient tokens carry."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth.bsn import BSN_SYSTEM
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.fhir.search.parser import parse_search
from rzcp.store.resources import ResourceStore
from rzcp.store.search_sql import execute_search


async def patient_for_bsn(conn: AsyncConnection, registry: SearchRegistry, bsn: str) -> str:
    """The id of the patient with this BSN (the oldest, if the store holds more than one)."""
    query = parse_search(
        "Patient",
        [("identifier", f"{BSN_SYSTEM}|{bsn}"), ("_sort", "_lastUpdated")],
        registry,
        strict=True,
        default_count=1,
        max_count=1,
    )
    result = await execute_search(conn, query, offset=0)
    if result.matches:
        return result.matches[0].res_id
    created = await ResourceStore(conn, registry).create(
        {"resourceType": "Patient", "identifier": [{"system": BSN_SYSTEM, "value": bsn}]}
    )
    return created.res_id
